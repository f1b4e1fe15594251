import Foundation
import Net
import XCTest

/// The channels-last (NHWC) paths of the layers compute what their NCHW paths
/// do: the same input in both memory orders, outputs and gradients compared
/// after converting back. C = 20 runs both the 16-channel SIMD loop and the tail.
final class ChannelsLastTests: XCTestCase {
    let shape = [3, 20, 5, 7]

    func tensor(_ shape: [Int], salt: Int, scale: Double = 1, offset: Double = 0) -> Tensor {
        Tensor(shape, values: formulaValues(shape.reduce(1, *), salt: salt, scale: scale, offset: offset))
    }

    /// `t` in the other memory order, and back to NCHW.
    func last(_ t: Tensor) -> Tensor { let r = Tensor(); r.assign(t, channelsLast: true); return r }
    func first(_ t: Tensor) -> Tensor { let r = Tensor(); r.assign(t, channelsLast: false); return r }

    func assertClose(_ a: [Float], _ b: [Float], _ tol: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = max(a.map { abs($0) }.max() ?? 0, 1e-30)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst / scale, tol, "\(what): max difference \(worst) of scale \(scale)", file: file, line: line)
    }

    func testLayoutRoundTripIsExactAndTransposes() {
        let x = tensor(shape, salt: 1)
        let l = last(x)
        XCTAssertTrue(l.channelsLast)
        // x[n=1, c=3, h=2, w=4] sits at row (1*5 + 2)*7 + 4, column 3.
        XCTAssertEqual(l.data[((1 * 5 + 2) * 7 + 4) * 20 + 3], x.data[((1 * 20 + 3) * 5 + 2) * 7 + 4])
        XCTAssertEqual(first(l).array, x.array)
    }

    func testBatchNormMatchesInBothOrders() {
        for relu in [false, true] {
            for training in [true, false] {
                let store = ParameterStore()
                let a = BatchNorm2d(store: store, name: "a", C: 20, relu: relu)
                let b = BatchNorm2d(store: store, name: "b", C: 20, relu: relu)
                // SyncBatchNorm's channels-last path, on one rank (the reduction adds nothing).
                let s = BatchNorm2d(store: store, name: "s", C: 20, relu: relu)
                s.statisticsReducer = { _, _ in }
                store.seal()
                for bn in [a, b, s] {
                    bn.resetParameters()
                    bn.training = training
                    let g = store.values + bn.weight.offset, h = store.values + bn.bias.offset
                    for c in 0..<20 { g[c] = 0.5 + Float(c) * 0.05; h[c] = Float(c % 5) * 0.1 - 0.2 }
                }
                if !training {
                    for name in ["a", "b", "s"] {
                        store.write(store.entry(named: name + ".running_mean")!, (0..<20).map { Float($0) * 0.01 })
                        store.write(store.entry(named: name + ".running_var")!, (0..<20).map { 0.5 + Float($0) * 0.1 })
                    }
                }
                // A mean far from 0 checks the statistics' cancellation as well.
                let x = tensor(shape, salt: 2, scale: 2, offset: 3), dy = tensor(shape, salt: 3)
                let ya = a.forward(x).array
                a.backward(dy)
                for (name, bn) in [("b", b), ("s", s)] {
                    let what = "\(name): relu \(relu), training \(training)"
                    let yb = first(bn.forward(last(x)))
                    XCTAssertTrue(bn.output.channelsLast)
                    assertClose(ya, yb.array, 1e-6, "y, " + what)
                    bn.backward(last(dy))
                    XCTAssertTrue(bn.dinput.channelsLast)
                    assertClose(a.dinput.array, first(bn.dinput).array, 1e-5, "dx, " + what)
                    for suffix in [".weight", ".bias"] {
                        let ea = store.entry(named: "a" + suffix)!, eb = store.entry(named: name + suffix)!
                        assertClose(store.readGrad(ea), store.readGrad(eb), 1e-5, suffix + " gradient, " + what)
                    }
                    for suffix in [".running_mean", ".running_var", ".num_batches_tracked"] {
                        let ea = store.entry(named: "a" + suffix)!, eb = store.entry(named: name + suffix)!
                        assertClose(store.read(ea), store.read(eb), 1e-6, suffix + ", " + what)
                    }
                }
            }
        }
    }

    func testPoolingMatchesExactlyWithTiesAndNaN() {
        let x = tensor([2, 20, 9, 11], salt: 4)
        // Ties and a NaN inside windows: the first maximum in scan order, the NaN wins.
        for c in [0, 17] {
            for i in 0..<(9 * 11) where i % 3 == 0 { x.data[c * 99 + i] = 0.75 }
        }
        x.data[(1 * 20 + 18) * 99 + 40] = .nan
        let a = MaxPool2d(), b = MaxPool2d()
        let ya = a.forward(x), yb = first(b.forward(last(x)))
        XCTAssertEqual(ya.array.map(\.bitPattern), yb.array.map(\.bitPattern))
        let dy = tensor(ya.shape, salt: 5)
        a.backward(dy)
        b.backward(last(dy))
        XCTAssertEqual(a.dinput.array, first(b.dinput).array)

        let ga = GlobalAvgPool(), gb = GlobalAvgPool()
        XCTAssertEqual(ga.forward(x).array.map(\.bitPattern), gb.forward(last(x)).array.map(\.bitPattern))
        let dp = tensor([2, 20], salt: 6)
        ga.backward(dp)
        gb.backward(dp)
        XCTAssertEqual(ga.dinput.array, first(gb.dinput).array)
    }

    /// In bf16 on oneDNN the network runs channels-last inside; what it hands
    /// out (block activations and gradients for CAMs) is NCHW, and the rest of
    /// the network from a captured activation gives the full forward's logits.
    func testBF16NetworkHandsOutNCHWAndResumesFromACapture() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        let engine = testEngine(.bf16)
        try XCTSkipUnless(engine.backend == .onednn, "DISTTRAIN_CONV selects the native convolutions")
        XCTAssertTrue(engine.channelsLast)
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 16), engine: engine)
        net.initialize(seed: 3)
        net.setTraining(false)
        let x = tensor([2, 1, 64, 64], salt: 7)
        let logits = net.forward(x).array
        let a = try XCTUnwrap(net.activation(named: "layer3"))
        XCTAssertFalse(a.channelsLast)
        XCTAssertEqual(a.shape, [2, 64, 4, 4])
        let inside = net.layers[2].last!.output
        XCTAssertTrue(inside.channelsLast)
        XCTAssertEqual(a.data[(1 * 64 + 5) * 16 + 6], inside.data[(1 * 16 + 6) * 64 + 5])
        let captured = Tensor()
        captured.copy(from: a)
        XCTAssertEqual(net.forwardRest(after: "layer3", activation: captured).array, logits)
    }

    /// bench --profile's roof: oneDNN's matmul runs and its rate is one a roof can be: at least an eighth
    /// of one thread of OpenBLAS on the same 256^3 product measured now (oneDNN runs on at least one thread
    /// with wider vectors, so a failed call (0), a timing that includes making the primitive, or FLOPs
    /// counted n^2 instead of 2 n^3 land far below), and under the machine's peak: every logical CPU at
    /// 6 GHz issuing 64 fp32 FLOP a cycle (two 16-lane FMA units; 1024 for bf16, AMX-class tiles), which a
    /// rate timed over the wrong span or over-counted would exceed. oneDNN goes first and OpenBLAS runs on
    /// the calling thread only: OpenBLAS's pool spins for a while after a threaded call, and on a small
    /// machine those spinning threads slowed oneDNN's OpenMP threads 50-fold (4 GFLOP/s instead of 200).
    /// Best of two calls each, so one descheduled repetition on a loaded machine does not decide.
    func testOneDNNMatmulRoofMeasures() throws {
        let n = 256
        let cycles = Double(ProcessInfo.processInfo.activeProcessorCount) * 6e9
        var rates: [(bf16: Bool, rate: Double, peak: Double)] = []
        for (bf16, flopsPerCycle) in [(false, 64.0), (true, 1024.0)] where !bf16 || BF16.supported {
            let rate = max(Conv2d.oneDNNMatmulGFLOPs(n: n, bf16: bf16), Conv2d.oneDNNMatmulGFLOPs(n: n, bf16: bf16))
            rates.append((bf16, rate, cycles * flopsPerCycle / 1e9))
        }
        let a = formulaValues(n * n, salt: 3, scale: 1)
        var c = [Float](repeating: 0, count: n * n)
        let threads = BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        var openBLAS = 0.0
        for _ in 0..<6 {
            let t0 = Date()
            a.withUnsafeBufferPointer { p in c.withUnsafeMutableBufferPointer { o in
                BLAS.gemm1(M: n, N: n, K: n, A: p.baseAddress!, lda: n, B: p.baseAddress!, ldb: n, C: o.baseAddress!, ldc: n)
            } }
            openBLAS = max(openBLAS, 2 * Double(n * n * n) / Date().timeIntervalSince(t0) / 1e9)
        }
        for r in rates {
            XCTAssertGreaterThan(r.rate, openBLAS / 8, "bf16 \(r.bf16): oneDNN \(r.rate) GFLOP/s, one thread of OpenBLAS \(openBLAS)")
            XCTAssertLessThan(r.rate, r.peak, "bf16 \(r.bf16): \(r.rate) GFLOP/s is over the peak")
        }
    }

    /// A 3x3 convolution (20 -> OC channels, weights by formula) and two identical BatchNorms with ReLU
    /// over its 20 input channels: one to run as before, one to hand over bf16. The convolution on `engine`.
    func convolutionAfterTwoBatchNorms(OC: Int, stride: Int, salt: Int, engine: Engine)
        -> (ParameterStore, Conv2d, BatchNorm2d, BatchNorm2d, StateEntry) {
        let store = ParameterStore(), ws = Workspace()
        let conv = Conv2d(store: store, ws: ws, name: "conv", C: 20, OC: OC, kernel: 3, stride: stride, pad: 1, engine: engine)
        let a = BatchNorm2d(store: store, name: "a", C: 20, relu: true)
        let b = BatchNorm2d(store: store, name: "b", C: 20, relu: true)
        store.seal()
        a.resetParameters(); b.resetParameters()
        let w = store.entry(named: "conv.weight")!
        store.write(w, formulaValues(w.count, salt: salt, scale: 0.2))
        return (store, conv, a, b, w)
    }

    /// In bf16 on oneDNN a BatchNorm hands its input gradient to the convolution before it as
    /// bfloat16: the fp32 gradient rounded to nearest even, and the convolution's backward
    /// computes from it what it computes from those values in fp32.
    func testBF16GradientHandOffFromBatchNormToConvolution() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        let engine = testEngine(.bf16)
        try XCTSkipUnless(engine.backend == .onednn, "DISTTRAIN_CONV selects the native convolutions")
        let (store, conv, a, b, w) = convolutionAfterTwoBatchNorms(OC: 20, stride: 1, salt: 8, engine: engine)
        let x = last(tensor(shape, salt: 9)), dy = last(tensor(shape, salt: 10))
        let y = conv.forward(x)
        XCTAssertTrue(y.channelsLast)
        a.forward(y); b.forward(y)
        a.backward(dy)
        b.backward(dy, bf16Gradient: true)
        XCTAssertTrue(b.dinput.bf16 && b.dinput.channelsLast)
        let rounded = a.dinput.array.map { BF16.round($0) }
        XCTAssertEqual(b.dinput.array, rounded)
        // The same values as fp32 and as bf16 give the convolution the same gradients.
        let asFloat = Tensor()
        asFloat.resize(shape, channelsLast: true)
        for i in 0..<asFloat.count { asFloat.data[i] = rounded[i] }
        func gradients(_ d: Tensor) -> (dw: [Float], dx: [Float]) {
            store.zeroGrads()
            conv.backward(d, needInputGrad: true)
            return (store.readGrad(w), conv.dinput.array)
        }
        let fromFloat = gradients(asFloat), fromBF16 = gradients(b.dinput)
        XCTAssertEqual(fromBF16.dw, fromFloat.dw)
        XCTAssertEqual(fromBF16.dx, fromFloat.dx)
        XCTAssertGreaterThan(fromFloat.dw.map { abs($0) }.max()!, 0)
    }

    /// Forward the same way: a BatchNorm whose only reader is a convolution writes its output as
    /// bfloat16 (the fp32 output rounded), and the convolution computes from it, forward and weight
    /// gradient, what it computes from those values in fp32.
    func testBF16ActivationHandOffFromBatchNormToConvolution() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        let engine = testEngine(.bf16)
        try XCTSkipUnless(engine.backend == .onednn, "DISTTRAIN_CONV selects the native convolutions")
        let (store, conv, a, b, w) = convolutionAfterTwoBatchNorms(OC: 24, stride: 2, salt: 11, engine: engine)
        let x = last(tensor(shape, salt: 12))
        let rounded = a.forward(x).array.map { BF16.round($0) }
        let yb = b.forward(x, bf16Output: true)
        XCTAssertTrue(yb.bf16 && yb.channelsLast)
        XCTAssertEqual(yb.array, rounded)
        let asFloat = Tensor()
        asFloat.resize(shape, channelsLast: true)
        for i in 0..<asFloat.count { asFloat.data[i] = rounded[i] }
        let dy = Tensor()
        func run(_ input: Tensor) -> (y: [Float], dw: [Float]) {
            let y = conv.forward(input).array
            if dy.count != conv.output.count { dy.copy(from: last(tensor(conv.output.shape, salt: 13))) }
            store.zeroGrads()
            conv.backward(dy, needInputGrad: false)
            return (y, store.readGrad(w))
        }
        let fromFloat = run(asFloat), fromBF16 = run(yb)
        XCTAssertEqual(fromBF16.y, fromFloat.y)
        XCTAssertEqual(fromBF16.dw, fromFloat.dw)
        XCTAssertGreaterThan(fromFloat.dw.map { abs($0) }.max()!, 0)
    }
}
