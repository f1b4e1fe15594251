import CDNNL
import Foundation

// 2-D convolution, forward and backward side by side, on one of two backends
// (`Engine.backend`): oneDNN's (the default: the kernels PyTorch runs on CPUs;
// fp32 as Winograd on 3x3 stride-1 layers with large enough maps, else direct;
// bf16 direct; CDNNL), or the engine's own
// im2col + GEMM and Winograd path below (the reference the oneDNN path is
// tested against, and the fallback: DISTTRAIN_CONV=native, read by DistTrain).
//
// Shapes (defined once for this file):
//   x  (N, C, H, W)        input, NCHW (NHWC too on oneDNN: ChannelsLast.swift)
//   w  (OC, C, KH, KW)     = the (OC, K) matrix with K = C*KH*KW, rows (c, kh, kw)
//   y  (N, OC, OH, OW)     OH = (H + 2*pad - KH) / stride + 1, P = OH*OW
//   col (K, G*P)           im2col of G images side by side: col[k, g*P + p]
//
// Images are processed in groups of G so that each GEMM has at least
// `Engine.gemmColumns` columns (deep layers have tiny P = OH*OW, and a (OC, K)x(K, 49)
// GEMM runs far below peak). With G == 1 the GEMM writes y[n] in place; with
// G > 1 it writes a staging (OC, G*P) matrix that is scattered into NCHW.
// 1x1 stride-1 unpadded convolutions (ResNet-50's bottlenecks) skip im2col:
// x[n] already is the (C, P) column matrix.
//
// The column matrix is not kept between forward and backward (it would cost
// K*P floats per image per layer); backward rebuilds it.

/// Where convolutions run. Both compute the same function; they round differently.
public enum ConvBackend: String, CaseIterable, Sendable {
    case onednn, native
}

public final class Conv2d {
    public let C, OC, KH, KW, stride, pad: Int
    public let weight: ParamRef
    public let bias: ParamRef?
    unowned let store: ParameterStore
    let ws: Workspace
    /// Backend, precision, threads and tuning, fixed for the layer's life.
    public let engine: Engine
    /// Where its time goes when `engine.profiling` (the model's, shared by its layers).
    public let profiler: Profiler
    public let output = Tensor()
    /// dL/dx, written (not accumulated) by backward when requested.
    public let dinput = Tensor()
    private var input: Tensor?
    /// oneDNN's primitives for this layer, made on first use.
    private var dnnl: OpaquePointer?

    /// `profiler`: the model's (nil: one of the layer's own, on when `engine.profiling`).
    public init(store: ParameterStore, ws: Workspace, name: String, C: Int, OC: Int,
                kernel: Int, stride: Int = 1, pad: Int = 0, bias: Bool = false, engine: Engine = Engine(), profiler: Profiler? = nil) {
        engine.requireSupported()
        self.C = C; self.OC = OC; self.KH = kernel; self.KW = kernel
        self.stride = stride; self.pad = pad
        self.store = store; self.ws = ws
        self.engine = engine
        self.profiler = profiler ?? Profiler(enabled: engine.profiling)
        weight = store.declare(name + ".weight", [OC, C, kernel, kernel], .parameter)
        self.bias = bias ? store.declare(name + ".bias", [OC], .parameter) : nil
    }

    deinit { if let d = dnnl { dt_dnnl_conv_free(d) } }

    var K: Int { C * KH * KW }
    var isPointwise: Bool { KH == 1 && KW == 1 && stride == 1 && pad == 0 }

    func outSize(_ H: Int, _ W: Int) -> (Int, Int) {
        ((H + 2 * pad - KH) / stride + 1, (W + 2 * pad - KW) / stride + 1)
    }

    func groupSize(N: Int, P: Int) -> Int {
        if isPointwise { return 1 }
        return max(1, min(N, (engine.gemmColumns + P - 1) / P))
    }

    /// y = conv(x) (+ bias). Keeps a reference to x for backward.
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        precondition(x.shape[1] == C, "conv expects \(C) channels, got \(x.shape)")
        let (OH, OW) = outSize(H, W)
        let P = OH * OW
        let last = engine.channelsLast
        precondition(last || !x.channelsLast, "a channels-last input reaches a convolution in NCHW mode")
        precondition(!x.bf16 || last, "a bf16 input needs oneDNN in bf16")
        output.resize([N, OC, OH, OW], channelsLast: last)
        input = x
        profiler.countConv(2 * Double(N * OC * P * K))
        if engine.backend == .onednn {
            let w = store.values + weight.offset, xp = x.data, yp = output.data
            let xl: Int32 = x.channelsLast ? 1 : 0, yl: Int32 = last ? 1 : 0, xb: Int32 = x.bf16 ? 1 : 0
            oneDNN { d, bf16 in dt_dnnl_conv_forward(d, bf16, xl, yl, Int32(N), Int32(H), Int32(W), xp, xb, w, yp) }
        } else if usesWinograd(H: H, W: W) {
            winogradForward(x)
        } else {
            im2colForward(x, OH: OH, OW: OW)
        }
        addBias(N: N, P: P)
        return output
    }

    /// The native forward without Winograd: per group of images, im2col (none for a
    /// pointwise convolution) and one GEMM, staged when the group holds several images.
    private func im2colForward(_ x: Tensor, OH: Int, OW: Int) {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let P = OH * OW, K = self.K
        let w = store.values + weight.offset
        let xp = x.data, yp = output.data
        let G = groupSize(N: N, P: P)
        var n0 = 0
        while n0 < N {
            let g = min(G, N - n0)
            if isPointwise {
                profiler.measure(.convGemm) {
                    engine.sgemm(M: OC, N: P, K: K, A: w, lda: K, B: xp + n0 * C * H * W, ldb: P,
                                 beta: 0, C: yp + n0 * OC * P, ldc: P)
                }
            } else {
                let col = ws.slot(0, K * g * P)
                profiler.measure(.im2col) { im2col(xp + n0 * C * H * W, g: g, H: H, W: W, OH: OH, OW: OW, col: col) }
                if g == 1 {
                    profiler.measure(.convGemm) {
                        engine.sgemm(M: OC, N: P, K: K, A: w, lda: K, B: col, ldb: P, beta: 0, C: yp + n0 * OC * P, ldc: P)
                    }
                } else {
                    let stage = ws.slot(1, OC * g * P)
                    profiler.measure(.convGemm) {
                        engine.sgemm(M: OC, N: g * P, K: K, A: w, lda: K, B: col, ldb: g * P, beta: 0, C: stage, ldc: g * P)
                    }
                    // stage[oc, i*P + p] -> y[n0+i, oc, p]
                    profiler.measure(.staging) { scatterStage(stage, into: yp, n0: n0, g: g, P: P) }
                }
            }
            n0 += g
        }
    }

    /// y[n0+i, oc, p] = stage[oc, i*P + p]: a group's (OC, g*P) GEMM result into NCHW.
    private func scatterStage(_ stage: UnsafeMutablePointer<Float>, into yp: UnsafeMutablePointer<Float>, n0: Int, g: Int, P: Int) {
        let OC = self.OC
        engine.parallel.chunks(g * OC, grain: 8) { lo, hi in
            for r in lo..<hi {
                let i = r / OC, oc = r % OC
                (yp + ((n0 + i) * OC + oc) * P).update(from: stage + oc * g * P + i * P, count: P)
            }
        }
    }

    /// stage[oc, i*P + p] = dy[n0+i, oc, p]: the transpose of `scatterStage`, a group's dY as one matrix.
    private func gatherStage(_ dyp: UnsafeMutablePointer<Float>, into stage: UnsafeMutablePointer<Float>, n0: Int, g: Int, P: Int) {
        let OC = self.OC
        engine.parallel.chunks(g * OC, grain: 8) { lo, hi in
            for r in lo..<hi {
                let i = r / OC, oc = r % OC
                (stage + oc * g * P + i * P).update(from: dyp + ((n0 + i) * OC + oc) * P, count: P)
            }
        }
    }

    func addBias(N: Int, P: Int) {
        guard let b = bias else { return }
        let bp = store.values + b.offset, yp = output.data
        if output.channelsLast {
            for r in 0..<(N * P) { for oc in 0..<OC { yp[r * OC + oc] += bp[oc] } }
            return
        }
        for n in 0..<N {
            for oc in 0..<OC {
                let v = bp[oc], row = yp + (n * OC + oc) * P
                for p in 0..<P { row[p] += v }
            }
        }
    }

    /// Given dy = dL/dy: accumulates dL/dw (and dL/db) into the gradient buffer
    /// unless frozen, and writes dL/dx into `dinput` when `needInputGrad`.
    public func backward(_ dy: Tensor, needInputGrad: Bool) {
        guard let x = input else { preconditionFailure("conv backward before forward") }
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let (OH, OW) = outSize(H, W)
        let P = OH * OW
        let frozen = store.isFrozen(weight)
        precondition(dy.channelsLast == output.channelsLast, "conv backward: dy's layout is not the output's")
        precondition(!dy.bf16 || (engine.backend == .onednn && engine.precision == .bf16 && bias == nil),
                     "conv backward: a bf16 dy needs oneDNN in bf16 (and no bias)")
        if needInputGrad {
            dinput.resize(x.shape, channelsLast: x.channelsLast)
            if !isPointwise && engine.backend == .native { profiler.measure(.im2col) { dinput.zero() } }
        }
        if !frozen { accumulateBiasGradient(dy, N: N, P: P) }
        if frozen && !needInputGrad { return }
        profiler.countConv(2 * Double(N * OC * P * K) * ((frozen ? 0 : 1) + (needInputGrad ? 1 : 0)))
        if engine.backend == .onednn {
            oneDNNBackward(x, dy, needInputGrad: needInputGrad, frozen: frozen)
        } else if usesWinograd(H: H, W: W) {
            winogradBackward(x, dy, needInputGrad: needInputGrad, frozen: frozen)
        } else {
            im2colBackward(x, dy, OH: OH, OW: OW, needInputGrad: needInputGrad, frozen: frozen)
        }
    }

    /// db += the sum of dy over images and positions, per output channel (no bias: nothing).
    private func accumulateBiasGradient(_ dy: Tensor, N: Int, P: Int) {
        guard let b = bias else { return }
        let db = store.grads + b.offset, dyp = dy.data
        if dy.channelsLast {
            var s = [Float](repeating: 0, count: OC)
            for r in 0..<(N * P) { for oc in 0..<OC { s[oc] += dyp[r * OC + oc] } }
            for oc in 0..<OC { db[oc] += s[oc] }
            return
        }
        for n in 0..<N {
            for oc in 0..<OC {
                let row = dyp + (n * OC + oc) * P
                var s: Float = 0
                for p in 0..<P { s += row[p] }
                db[oc] += s
            }
        }
    }

    /// Both gradients in one oneDNN call (dw accumulated unless frozen, dx when needed).
    private func oneDNNBackward(_ x: Tensor, _ dy: Tensor, needInputGrad: Bool, frozen: Bool) {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let w = store.values + weight.offset, dw = store.grads + weight.offset
        let xp = x.data, dyp = dy.data
        let dx = needInputGrad ? dinput.data : nil
        let xl: Int32 = x.channelsLast ? 1 : 0, yl: Int32 = dy.channelsLast ? 1 : 0
        let xb: Int32 = x.bf16 ? 1 : 0, dyb: Int32 = dy.bf16 ? 1 : 0
        oneDNN { d, bf16 in
            dt_dnnl_conv_backward(d, bf16, xl, yl, Int32(N), Int32(H), Int32(W), xp, xb, w, dyp, dyb, frozen ? nil : dw, dx)
        }
    }

    /// The native backward without Winograd, per group of images: dW += dY col^T
    /// (col rebuilt by im2col) and dcol = W^T dY scattered into dx by col2im.
    private func im2colBackward(_ x: Tensor, _ dy: Tensor, OH: Int, OW: Int, needInputGrad: Bool, frozen: Bool) {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        let P = OH * OW, K = self.K
        let w = store.values + weight.offset, dw = store.grads + weight.offset
        let xp = x.data, dyp = dy.data, dxp = dinput.data
        let G = groupSize(N: N, P: P)
        var n0 = 0
        while n0 < N {
            let g = min(G, N - n0)
            // dY of the group as an (OC, g*P) matrix.
            let dyg: UnsafeMutablePointer<Float>
            if g == 1 {
                dyg = dyp + n0 * OC * P
            } else {
                dyg = ws.slot(1, OC * g * P)
                profiler.measure(.staging) { gatherStage(dyp, into: dyg, n0: n0, g: g, P: P) }
            }
            if isPointwise {
                let xn = xp + n0 * C * H * W
                profiler.measure(.convGemm) {
                    if !frozen {
                        engine.sgemm(transB: true, M: OC, N: K, K: P, A: dyg, lda: P, B: xn, ldb: P, beta: 1, C: dw, ldc: K)
                    }
                    if needInputGrad {
                        engine.sgemm(transA: true, M: K, N: P, K: OC, A: w, lda: K, B: dyg, ldb: P,
                                     beta: 0, C: dxp + n0 * C * H * W, ldc: P)
                    }
                }
            } else {
                let col = ws.slot(0, K * g * P)
                if !frozen {
                    profiler.measure(.im2col) { im2col(xp + n0 * C * H * W, g: g, H: H, W: W, OH: OH, OW: OW, col: col) }
                    // dW (OC, K) += dY (OC, gP) * col^T (gP, K)
                    profiler.measure(.convGemm) {
                        engine.sgemm(transB: true, M: OC, N: K, K: g * P, A: dyg, lda: g * P, B: col, ldb: g * P,
                                     beta: 1, C: dw, ldc: K)
                    }
                }
                if needInputGrad {
                    // dcol (K, gP) = W^T (K, OC) * dY (OC, gP), then scatter-add into dx.
                    profiler.measure(.convGemm) {
                        engine.sgemm(transA: true, M: K, N: g * P, K: OC, A: w, lda: K, B: dyg, ldb: g * P,
                                     beta: 0, C: col, ldc: g * P)
                    }
                    profiler.measure(.im2col) { col2im(col, g: g, H: H, W: W, OH: OH, OW: OW, dx: dxp + n0 * C * H * W) }
                }
            }
            n0 += g
        }
    }

    /// Runs one CDNNL call on this layer's primitives (made on first use) in the
    /// engine's precision, timed; a failure (a shape oneDNN cannot run, no memory) is fatal.
    func oneDNN(_ call: (OpaquePointer, Int32) -> Int32) {
        let d = dnnl ?? dt_dnnl_conv_new(Int32(C), Int32(OC), Int32(KH), Int32(KW), Int32(stride), Int32(pad))!
        dnnl = d
        let bf16: Int32 = engine.precision == .bf16 ? 1 : 0
        let rc = profiler.measure(.dnnlConv) { call(d, bf16) }
        if rc != 0 { fatalError(String(cString: dt_dnnl_error())) }
    }

    /// GFLOP/s of oneDNN's n x n x n matmul (bf16 or fp32 operands, fp32 result) on its threads, best
    /// of 3 (0 if it failed): the GEMM roof under the oneDNN convolutions.
    public static func oneDNNMatmulGFLOPs(n: Int, bf16: Bool) -> Double {
        let t = dt_dnnl_matmul_seconds(Int32(n), Int32(n), Int32(n), bf16 ? 1 : 0, 3)
        return t > 0 ? 2 * Double(n) * Double(n) * Double(n) / t / 1e9 : 0
    }

    /// Valid output columns [lo, hi) for kernel offset k: those with
    /// 0 <= o*stride - pad + k < size.
    @inline(__always)
    func validRange(k: Int, size: Int, out: Int) -> (Int, Int) {
        // o >= (pad - k) / stride, rounded up; o <= (size - 1 + pad - k) / stride.
        let a = pad - k
        let lo = a <= 0 ? 0 : (a + stride - 1) / stride
        let b = size - 1 + pad - k
        let hi = b < 0 ? 0 : min(out, b / stride + 1)
        return (min(lo, hi), hi)
    }

    /// col[(c*KH + kh)*KW + kw, i*P + oh*OW + ow] = x[i, c, oh*s - pad + kh, ow*s - pad + kw] (0 outside).
    func im2col(_ x: UnsafeMutablePointer<Float>, g: Int, H: Int, W: Int, OH: Int, OW: Int,
                col: UnsafeMutablePointer<Float>) {
        let P = OH * OW, ld = g * P, C = self.C, KH = self.KH, KW = self.KW, s = stride, pad = self.pad
        engine.parallel.chunks(C * KH * KW, grain: 4) { lo, hi in
            for row in lo..<hi {
                let c = row / (KH * KW), kh = (row / KW) % KH, kw = row % KW
                let (owLo, owHi) = self.validRange(k: kw, size: W, out: OW)
                for i in 0..<g {
                    let xc = x + (i * C + c) * H * W
                    var dst = col + row * ld + i * P
                    for oh in 0..<OH {
                        let ih = oh * s - pad + kh
                        if ih < 0 || ih >= H {
                            dst.update(repeating: 0, count: OW)
                        } else {
                            let src = xc + ih * W - pad + kw
                            for ow in 0..<owLo { dst[ow] = 0 }
                            if s == 1 {
                                (dst + owLo).update(from: src + owLo, count: owHi - owLo)
                            } else {
                                for ow in owLo..<owHi { dst[ow] = src[ow * s] }
                            }
                            for ow in owHi..<OW { dst[ow] = 0 }
                        }
                        dst += OW
                    }
                }
            }
        }
    }

    /// The adjoint of im2col: dx[i, c, ih, iw] += col[row, i*P + p] for every
    /// (row, p) that im2col read from (ih, iw). Parallel over channels, so no
    /// two threads write the same dx element.
    func col2im(_ col: UnsafeMutablePointer<Float>, g: Int, H: Int, W: Int, OH: Int, OW: Int,
                dx: UnsafeMutablePointer<Float>) {
        let P = OH * OW, ld = g * P, C = self.C, KH = self.KH, KW = self.KW, s = stride, pad = self.pad
        engine.parallel.chunks(C, grain: 1) { lo, hi in
            for c in lo..<hi {
                for kh in 0..<KH {
                    for kw in 0..<KW {
                        let row = (c * KH + kh) * KW + kw
                        let (owLo, owHi) = self.validRange(k: kw, size: W, out: OW)
                        for i in 0..<g {
                            let dxc = dx + (i * C + c) * H * W
                            let src = col + row * ld + i * P
                            for oh in 0..<OH {
                                let ih = oh * s - pad + kh
                                if ih < 0 || ih >= H { continue }
                                let d = dxc + ih * W - pad + kw
                                let r = src + oh * OW
                                if s == 1 {
                                    for ow in owLo..<owHi { d[ow] += r[ow] }
                                } else {
                                    for ow in owLo..<owHi { d[ow * s] += r[ow] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
