import Foundation
@testable import Net
import XCTest

/// The fused inference path (FusedInference: BatchNorm folded, oneDNN
/// post-ops) against references with tolerances derived, not measured:
/// - one layer at a time against the exact result in Double, within the
///   worst-case rounding bound of a dot product (Higham, Accuracy and
///   Stability of Numerical Algorithms, 3.1: |fl(sum) - sum| <= gamma_n sum|terms|,
///   gamma_n = n u / (1 - n u), for any summation order), plus in bf16 the
///   rounding of each operand and of the stored output to 8 significant bits;
/// - whole networks against the plain eval-mode forward: the same function, so
///   only rounding differs; a wiring check with the margin argued at
///   testNetworksMatchThePlainForward (not a proven bound), over several batch
///   sizes and image sizes (the layers' per-shape primitives, evicted past four,
///   and the buffers regrown).
/// Shapes are chosen where oneDNN runs direct kernels (no Winograd, whose
/// transforms round differently from a dot product): 9x9 maps (Conv2d's rule).
final class FusedInferenceTests: XCTestCase {
    // Unit roundoff (round to nearest) of fp32 (24 significant bits) and of bfloat16 (8): u = 2^-p.
    let u32 = pow(2.0, -24.0), u16 = pow(2.0, -8.0)

    func gamma(_ n: Int) -> Double { Double(n) * u32 / (1 - Double(n) * u32) }

    struct Conv { var C, OC, K, stride, pad: Int; var w: [Float]; var b: [Float] }

    func conv(_ C: Int, _ OC: Int, _ K: Int, stride: Int, pad: Int, salt: Int) -> Conv {
        let scale = 1 / Double(C * K * K).squareRoot()
        return Conv(C: C, OC: OC, K: K, stride: stride, pad: pad,
                    w: formulaValues(OC * C * K * K, salt: salt, scale: 2 * scale, offset: -scale),
                    b: formulaValues(OC, salt: salt + 1, scale: 0.4, offset: -0.2))
    }

    /// y = conv(x) + b, and sum_k |w x| + |b|, exactly (Double), for x (N, C, H, W).
    func reference(_ c: Conv, _ x: [Double], N: Int, H: Int, W: Int) -> (y: [Double], abs: [Double], OH: Int, OW: Int) {
        let OH = (H + 2 * c.pad - c.K) / c.stride + 1, OW = (W + 2 * c.pad - c.K) / c.stride + 1
        var y = [Double](repeating: 0, count: N * c.OC * OH * OW), a = y
        for n in 0..<N { for o in 0..<c.OC { for i in 0..<OH { for j in 0..<OW {
            var s = Double(c.b[o]), t = abs(Double(c.b[o]))
            for ch in 0..<c.C { for ki in 0..<c.K { for kj in 0..<c.K {
                let h = i * c.stride - c.pad + ki, w = j * c.stride - c.pad + kj
                guard h >= 0, h < H, w >= 0, w < W else { continue }
                let p = Double(c.w[((o * c.C + ch) * c.K + ki) * c.K + kj]) * x[((n * c.C + ch) * H + h) * W + w]
                s += p; t += abs(p)
            } } }
            let k = ((n * c.OC + o) * OH + i) * OW + j
            y[k] = s; a[k] = t
        } } } }
        return (y, a, OH, OW)
    }

    /// The bound on |computed - exact| of one output of a layer whose exact value is `y`, whose absolute terms sum to
    /// `a` over `n` terms, whose inputs were already off by at most `inputError` (scaled by the absolute weights).
    func bound(y: Double, a: Double, n: Int, bf16: Bool) -> Double {
        if !bf16 { return gamma(n) * a }
        // Each product of two rounded operands: (1 + d1)(1 + d2), |d| <= u16; products of bfloat16s are exact in fp32,
        // their fp32 sum rounds by gamma_n; the stored output rounds by u16.
        let operands = (2 * u16 + u16 * u16) * a, sum = gamma(n) * (1 + u16) * (1 + u16) * a
        return operands + sum + u16 * (abs(y) + operands + sum)
    }

    func graph(_ layers: (Recorder) -> String, classes: Int = 2, channels: Int) -> (Recorder, String) {
        let g = Recorder()
        let map = layers(g)
        let w = g.constant("fc.weight", shape: [classes, channels], formulaValues(classes * channels, salt: 99, scale: 0.2, offset: -0.1))
        let b = g.constant("fc.bias", shape: [classes], [Float](repeating: 0.01, count: classes))
        let logits = g.linear(g.flatten(g.globalAveragePool(map, named: "pooled"), named: "features"), weight: w, bias: b, named: "logits")
        return (g, logits)
    }

    func emit(_ g: Recorder, _ c: Conv, _ x: String, _ name: String) -> String {
        let w = g.constant(name + ".weight", shape: [c.OC, c.C, c.K, c.K], c.w), b = g.constant(name + ".bias", shape: [c.OC], c.b)
        return g.conv(x, weight: w, bias: b, kernel: c.K, stride: c.stride, pad: c.pad, named: name)
    }

    func check(_ ours: Tensor, _ ref: [Double], _ bounds: [Double], _ what: String) {
        XCTAssertEqual(ours.count, ref.count, what)
        var worst = 0.0, at = 0
        for k in 0..<min(ours.count, ref.count) {
            let excess = abs(Double(ours.data[k]) - ref[k]) / max(bounds[k], 1e-300)
            if excess > worst { worst = excess; at = k }
        }
        XCTAssertLessThanOrEqual(worst, 1, "\(what): element \(at) is \(ours.data[at]), exactly \(ref[at]), bound \(bounds[at])")
    }

    /// The network's input conv (plain NCHW in), then conv + bias + ReLU, stride 2 and 1, 3x3 and 1x1.
    func testConvolutionsWithReLUWithinTheirBounds() throws {
        for bf16 in BF16.supported ? [false, true] : [false] {
            let N = 2, H = 9, W = 9
            let stem = conv(3, 16, 3, stride: 1, pad: 1, salt: 1), c2 = conv(16, 32, 3, stride: 2, pad: 1, salt: 3),
                c3 = conv(32, 32, 1, stride: 1, pad: 0, salt: 5)
            let (g, logits) = graph({ g in
                let a = g.relu(emit(g, stem, "input", "stem"), named: "r1")
                let b = g.relu(emit(g, c2, a, "c2"), named: "r2")
                return g.relu(emit(g, c3, b, "c3"), named: "r3")
            }, channels: 32)
            let f = try FusedInference(g, logits: logits, inChannels: 3, numClasses: 2, bf16: bf16)
            let xv = formulaValues(N * 3 * H * W, salt: 7, scale: 2, offset: -1)
            let map = try f.lastMap(Tensor([N, 3, H, W], values: xv))
            // The exact chain, with every layer's own bound carried to the next as an input error times sum|w|.
            var x = xv.map(Double.init), err = [Double](repeating: 0, count: xv.count), h = H, w = W, C = 3
            for c in [stem, c2, c3] {
                let r = reference(c, x, N: N, H: h, W: w)
                // The input error |e| reaches an output through sum |w| e <= max(e) sum|w| of that output channel.
                let maxErr = err.max() ?? 0
                let P = r.OH * r.OW
                var newErr = [Double](repeating: 0, count: r.y.count)
                for k in 0..<r.y.count {
                    let o = (k / P) % c.OC
                    let wAbs = c.w[(o * C * c.K * c.K)..<((o + 1) * C * c.K * c.K)].reduce(0.0) { $0 + abs(Double($1)) }
                    newErr[k] = bound(y: r.y[k], a: r.abs[k] + wAbs * maxErr, n: C * c.K * c.K + 1, bf16: bf16) + wAbs * maxErr
                }
                x = r.y.map { max($0, 0) }; err = newErr; h = r.OH; w = r.OW; C = c.OC
            }
            check(map, x, err, "bf16 \(bf16)")
            XCTAssertEqual(map.shape, [N, 32, 5, 5])
        }
    }

    /// relu(conv(a) + shortcut) written onto the shortcut's buffer: the shortcut a 1x1 stride-2 convolution
    /// of the same input (a downsampling block), then a max pool of the result.
    func testResidualSumAndPoolWithinTheirBounds() throws {
        for bf16 in BF16.supported ? [false, true] : [false] {
            let N = 2, H = 9, W = 9
            let branch = conv(16, 32, 3, stride: 2, pad: 1, salt: 11), shortcut = conv(16, 32, 1, stride: 2, pad: 0, salt: 13),
                stem = conv(1, 16, 3, stride: 1, pad: 1, salt: 15)
            let (g, logits) = graph({ g in
                let x = g.relu(emit(g, stem, "input", "stem"), named: "r0")
                let y = emit(g, branch, x, "branch")
                let s = emit(g, shortcut, x, "downsample")
                let r = g.relu(g.add(y, s, named: "add"), named: "relu")
                return g.maxPool(r, kernel: 3, stride: 2, pad: 1, named: "pool")
            }, channels: 32)
            let f = try FusedInference(g, logits: logits, inChannels: 1, numClasses: 2, bf16: bf16)
            let xv = formulaValues(N * H * W, salt: 17, scale: 2, offset: -1)
            let map = try f.lastMap(Tensor([N, 1, H, W], values: xv))
            let s0 = reference(stem, xv.map(Double.init), N: N, H: H, W: W)
            let e0 = zip(s0.y, s0.abs).map { bound(y: $0, a: $1, n: 10, bf16: bf16) }.max()!
            let x = s0.y.map { max($0, 0) }
            let rb = reference(branch, x, N: N, H: H, W: W), rs = reference(shortcut, x, N: N, H: H, W: W)
            let wAbs = { (c: Conv, o: Int) in c.w[(o * c.C * c.K * c.K)..<((o + 1) * c.C * c.K * c.K)].reduce(0.0) { $0 + abs(Double($1)) } }
            let P = rb.OH * rb.OW
            var y = [Double](), e = [Double]()
            for k in 0..<rb.y.count {
                let o = (k / P) % 32
                let sumExact = rb.y[k] + rs.y[k]
                // The shortcut's own error (stored as bfloat16 too), then the branch's sum with it added as one more term.
                let es = bound(y: rs.y[k], a: rs.abs[k] + wAbs(shortcut, o) * e0, n: 17, bf16: bf16) + wAbs(shortcut, o) * e0
                let eb = bound(y: sumExact, a: rb.abs[k] + abs(rs.y[k]) + es + wAbs(branch, o) * e0, n: 16 * 9 + 2, bf16: bf16)
                y.append(max(sumExact, 0)); e.append(eb + es + wAbs(branch, o) * e0)
            }
            // Max pool: 1-Lipschitz, so its error is the largest of its window's.
            let OH = (rb.OH + 2 - 3) / 2 + 1
            var pooled = [Double](), pe = [Double]()
            for n in 0..<N { for c in 0..<32 { for i in 0..<OH { for j in 0..<OH {
                var m = -Double.infinity, me = 0.0
                for a in 0..<3 { for b in 0..<3 {
                    let hh = i * 2 - 1 + a, ww = j * 2 - 1 + b
                    guard hh >= 0, hh < rb.OH, ww >= 0, ww < rb.OW else { continue }
                    let k = ((n * 32 + c) * rb.OH + hh) * rb.OW + ww
                    m = max(m, y[k]); me = max(me, e[k])
                } }
                pooled.append(m); pe.append(me)
            } } } }
            check(map, pooled, pe, "bf16 \(bf16)")
        }
    }

    /// Weights beyond FusedInference.weightLimit (which could overflow inside, where oneDNN's ReLU would hide the
    /// NaN) are left to the plain forward.
    func testRefusesWeightsOutOfRange() {
        let stem = conv(1, 16, 3, stride: 1, pad: 1, salt: 25)
        var huge = stem
        huge.w[0] = 3e38
        for (c, refused) in [(stem, false), (huge, true)] {
            let (g, logits) = graph({ g in g.relu(emit(g, c, "input", "stem"), named: "r") }, channels: 16)
            do {
                _ = try FusedInference(g, logits: logits, inChannels: 1, numClasses: 2, bf16: false)
                XCTAssertFalse(refused)
            } catch let e as FusedInferenceError {
                XCTAssertTrue(refused && e.expected, "\(e)")
            } catch { XCTFail("\(error)") }
        }
    }

    /// A shortcut that is read after its add cannot be written over: refused, not computed wrong.
    func testRefusesAGraphItCannotFuse() {
        let c = conv(16, 16, 3, stride: 1, pad: 1, salt: 21), stem = conv(1, 16, 3, stride: 1, pad: 1, salt: 23)
        let (g, logits) = graph({ g in
            let x = emit(g, stem, "input", "stem")
            let y = emit(g, c, x, "branch")
            let s = g.add(y, x, named: "add")
            return g.add(emit(g, c, s, "again"), x, named: "add2")  // x read again after the first add
        }, channels: 16)
        XCTAssertThrowsError(try FusedInference(g, logits: logits, inChannels: 1, numClasses: 2, bf16: false))
    }

    /// ResNet-18 and ResNet-50 (small widths, one not a multiple of 16), with BatchNorm statistics and affine parameters
    /// away from the identity: the fused logits against the plain eval-mode forward of the same weights. Both compute
    /// the same function; the per-layer bounds above are of the order 1e-5 (fp32) and 2e-2 (bf16) of a layer's absolute
    /// terms, so over the ~20-50 layers of these networks (BatchNorm keeps each layer's gain near 1; an assumption, so
    /// this is a margin, not a proof) the logits may differ by about the layers' count times that. The tolerances,
    /// 2e-3 (fp32) and 0.25 (bf16) of the logits' scale, leave that room; a wiring error (a missed ReLU, a shortcut
    /// added twice or not at all, a wrong stride) moves the logits by their own scale. Each network sees batches of
    /// 3, 1 and 5 images at 40 and 33 px in turn: six shapes, more than the four primitives a layer keeps.
    func testNetworksMatchThePlainForward() throws {
        // Width 12: fp32 activations NHWC instead of blocked (channel counts not multiples of 16).
        for (arch, width) in [(Arch.resnet18, 16), (.resnet50, 16), (.resnet18, 12)] {
            for precision in BF16.supported ? [Precision.fp32, .bf16] : [.fp32] {
                let net = ResNet(ResNetConfig(arch: arch, inChannels: 1, numClasses: 3, width: width),
                                 engine: Engine(backend: .onednn, precision: precision, threads: 2))
                fillFormula(net)
                let x = Tensor([3, 1, 40, 40], values: formulaValues(3 * 1600, salt: 31, scale: 2, offset: -1))
                // Running statistics of this input (one training-mode pass), then the affine parameters moved away from 1, 0.
                net.setTraining(true)
                _ = net.forward(x)
                net.setTraining(false)
                for (k, bn) in net.allBatchNorms.enumerated() {
                    let g = formulaValues(bn.C, salt: 100 + k, scale: 0.8, offset: 0.6), h = formulaValues(bn.C, salt: 200 + k, scale: 0.4, offset: -0.2)
                    for c in 0..<bn.C { net.store.values[bn.weight.offset + c] = g[c]; net.store.values[bn.bias.offset + c] = h[c] }
                }
                // A head whose logits are of order 1, so that a wiring error shows at their scale.
                let fc = net.store.entry(named: "fc.weight")!
                net.store.write(fc, formulaValues(fc.count, salt: 300, scale: 20 / Double(net.featureCount).squareRoot(),
                                                  offset: -10 / Double(net.featureCount).squareRoot()))
                let fusedNet = try FusedInference(net)
                for (n, size) in [(3, 40), (1, 40), (5, 40), (3, 33), (1, 33), (5, 33), (3, 40)] {
                    let x = Tensor([n, 1, size, size], values: formulaValues(n * size * size, salt: 31 + size, scale: 2, offset: -1))
                    let plain = net.forward(x).array
                    let fused = try fusedNet.logits(x).array
                    let scale = plain.map(abs).max()!
                    let worst = zip(plain, fused).map { abs($0 - $1) }.max()!
                    let tol: Float = precision == .bf16 ? 0.25 : 2e-3
                    let what = "\(arch) width \(width) \(precision), \(n) x \(size) px"
                    XCTAssertLessThanOrEqual(worst, tol * scale, "\(what): logits \(fused) against \(plain)")
                    XCTAssertGreaterThan(scale, 0.1, "\(what): logits too small to tell a wiring error")
                }
                XCTAssertTrue(fusedNet.implementations.allSatisfy { !$0.isEmpty })
            }
        }
    }
}
