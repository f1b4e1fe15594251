import Foundation
import Net
import XCTest

/// The bf16 GEMM against a float64 reference on the same bf16-rounded inputs:
/// what is left is fp32 accumulation, bounded by K * 2^-23 * sum |a||b|.
final class BF16Tests: XCTestCase {
    func testRoundingIsNearestEven() {
        XCTAssertEqual(BF16.round(1), 1)
        XCTAssertEqual(BF16.round(1 + 1.0 / 256), 1, "halfway (bit 16 set, rest 0) rounds to even")
        XCTAssertEqual(BF16.round(1 + 3.0 / 256), 1 + 4.0 / 256, "halfway to odd rounds up to even")
        XCTAssertEqual(BF16.round(1 + 1.0 / 128), 1 + 1.0 / 128, "representable")
        XCTAssertTrue(BF16.round(.nan).isNaN)
        XCTAssertEqual(BF16.round(.infinity), .infinity)
        XCTAssertEqual(BF16.round(3.4e38), .infinity, "past the largest bf16 (3.39e38) and halfway on, infinity")
        XCTAssertEqual(BF16.round(3.39e38), 3.3895314e38, "the largest bf16")
    }

    func testGEMMMatchesTheRoundedReferenceInEveryLayout() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        var rng = Xoshiro256(seed: 11)
        // Edges: M not a multiple of 6, N of 32 or 16, odd K, K over one block (384), tiny shapes.
        for (M, N, K) in [(13, 45, 777), (64, 96, 576), (1, 1, 1), (7, 33, 3), (6, 32, 384), (70, 17, 1153)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = (0..<(M * K)).map { _ in Float(rng.normal()) }, b = (0..<(K * N)).map { _ in Float(rng.normal()) }
                let c0 = (0..<(M * N)).map { _ in Float(rng.normal()) }
                let (alpha, beta): (Float, Float) = (0.75, K % 2 == 0 ? 0 : -1.5)
                var c = c0
                let lda = ta ? M : K, ldb = tb ? K : N
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    BF16.gemm(transA: ta, transB: tb, M: M, N: N, K: K, alpha: alpha, A: ap.baseAddress!, lda: lda, B: bp.baseAddress!,
                              ldb: ldb, beta: beta, C: cp.baseAddress!, ldc: N)
                } } }
                var worst = 0.0
                for i in 0..<M { for j in 0..<N {
                    var s = 0.0, mag = 0.0
                    for k in 0..<K {
                        let x = Double(BF16.round(ta ? a[k * lda + i] : a[i * lda + k]))
                        let y = Double(BF16.round(tb ? b[j * ldb + k] : b[k * ldb + j]))
                        s += x * y; mag += abs(x * y)
                    }
                    let want = Double(alpha) * s + Double(beta) * Double(c0[i * N + j])
                    let bound = Double(K + 2) * 1.2e-7 * (Double(abs(alpha)) * mag + abs(Double(beta * c0[i * N + j]))) + 1e-30
                    worst = max(worst, abs(Double(c[i * N + j]) - want) / bound)
                } }
                XCTAssertLessThanOrEqual(worst, 1, "M \(M) N \(N) K \(K) transA \(ta) transB \(tb): error \(worst) x the fp32 bound")
            }
        }
    }

    func testGEMMDiffersFromFP32ByBF16Rounding() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        // 1 + 2^-10 is not a bf16: the product sees 1, so C is exactly K, not K * (1 + 2^-10).
        let K = 64
        let a = [Float](repeating: 1 + 1.0 / 1024, count: K), b = [Float](repeating: 1, count: K)
        var c: [Float] = [0]
        BF16.gemm(M: 1, N: 1, K: K, A: a, lda: K, B: b, ldb: 1, beta: 0, C: &c, ldc: 1)
        XCTAssertEqual(c[0], Float(K))
    }

    /// An engine's bf16 precision reaches the layers: a ResNet-18's logits and input
    /// gradient move by bf16 rounding (relative 1e-4 ... 5e-2 of their scale), not by nothing and not by more.
    func testPrecisionSwitchesTheNetworksGEMMs() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        // The same network (seed) on two engines: a network's precision is its engine's.
        func network(_ precision: Precision) -> ResNet {
            let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 8), engine: testEngine(precision))
            net.initialize(seed: 5)
            net.setTraining(false)
            return net
        }
        let fp32Net = network(.fp32), bf16Net = network(.bf16)
        var rng = Xoshiro256(seed: 2)
        let x = Tensor([2, 1, 32, 32])
        for i in 0..<x.count { x[i] = Float(rng.normal()) }
        func run(_ net: ResNet) -> [Float] {
            let y = net.forward(x)
            return (0..<y.count).map { y[$0] }
        }
        let fp32 = run(fp32Net)
        let bf16 = run(bf16Net)
        XCTAssertEqual(run(fp32Net), fp32, "back to fp32 is fp32 again")
        let scale = fp32.map { abs($0) }.max()!, diff = zip(fp32, bf16).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(diff / scale, 1e-4, "bf16 changed nothing: the GEMMs did not switch")
        XCTAssertLessThan(diff / scale, 5e-2, "bf16 moved the logits by more than its rounding explains")
    }
}
