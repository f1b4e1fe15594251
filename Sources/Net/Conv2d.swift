import CDNNL
import Foundation

// 2-D convolution, forward and backward side by side, on one of two backends
// (`Conv2d.backend`): oneDNN's (the default: the kernels PyTorch runs on CPUs;
// fp32 as Winograd on 3x3 stride-1 layers with large enough maps, else direct;
// bf16 direct; CDNNL), or the engine's own
// im2col + GEMM and Winograd path below (the reference the oneDNN path is
// tested against, and the fallback: DISTTRAIN_CONV=native).
//
// Shapes (defined once for this file):
//   x  (N, C, H, W)        input, NCHW (NHWC too on oneDNN: ChannelsLast.swift)
//   w  (OC, C, KH, KW)     = the (OC, K) matrix with K = C*KH*KW, rows (c, kh, kw)
//   y  (N, OC, OH, OW)     OH = (H + 2*pad - KH) / stride + 1, P = OH*OW
//   col (K, G*P)           im2col of G images side by side: col[k, g*P + p]
//
// Images are processed in groups of G so that each GEMM has at least
// `targetColumns` columns (deep layers have tiny P = OH*OW, and a (OC, K)x(K, 49)
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
    public let output = Tensor()
    /// dL/dx, written (not accumulated) by backward when requested.
    public let dinput = Tensor()
    private var input: Tensor?
    // The next three tune the native backend only.
    /// Minimum GEMM width (columns) a group of images aims for; a tuning knob.
    nonisolated(unsafe) public static var targetColumns = 2048
    /// Run 3x3 stride-1 convolutions as Winograd F(2x2, 3x3) (Winograd.swift).
    nonisolated(unsafe) public static var winogradEnabled = true
    /// Minimum tiles (GEMM columns) per image group in Winograd convolutions.
    nonisolated(unsafe) public static var winogradColumns = 2048
    /// The backend for all convolutions; DISTTRAIN_CONV=native selects the engine's own.
    nonisolated(unsafe) public static var backend: ConvBackend = {
        if let v = getenv("DISTTRAIN_CONV"), let b = ConvBackend(rawValue: String(cString: v)) { return b }
        return .onednn
    }()
    /// oneDNN's primitives for this layer, made on first use.
    private var dnnl: OpaquePointer?

    public init(store: ParameterStore, ws: Workspace, name: String, C: Int, OC: Int,
                kernel: Int, stride: Int = 1, pad: Int = 0, bias: Bool = false) {
        self.C = C; self.OC = OC; self.KH = kernel; self.KW = kernel
        self.stride = stride; self.pad = pad
        self.store = store; self.ws = ws
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
        return max(1, min(N, (Conv2d.targetColumns + P - 1) / P))
    }

    /// y = conv(x) (+ bias). Keeps a reference to x for backward.
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let N = x.shape[0], H = x.shape[2], W = x.shape[3]
        precondition(x.shape[1] == C, "conv expects \(C) channels, got \(x.shape)")
        let (OH, OW) = outSize(H, W)
        let P = OH * OW, K = self.K
        let last = Conv2d.channelsLast
        precondition(last || !x.channelsLast, "a channels-last input reaches a convolution in NCHW mode")
        precondition(!x.bf16 || last, "a bf16 input needs oneDNN in bf16")
        output.resize([N, OC, OH, OW], channelsLast: last)
        input = x
        let w = store.values + weight.offset
        let xp = x.data, yp = output.data
        Profiler.countConv(2 * Double(N * OC * P * K))
        if Conv2d.backend == .onednn {
            let xl: Int32 = x.channelsLast ? 1 : 0, yl: Int32 = last ? 1 : 0, xb: Int32 = x.bf16 ? 1 : 0
            oneDNN { d, bf16 in dt_dnnl_conv_forward(d, bf16, xl, yl, Int32(N), Int32(H), Int32(W), xp, xb, w, yp) }
            addBias(N: N, P: P)
            return output
        }
        if usesWinograd(H: H, W: W) {
            winogradForward(x)
            addBias(N: N, P: P)
            return output
        }
        let G = groupSize(N: N, P: P)
        var n0 = 0
        while n0 < N {
            let g = min(G, N - n0)
            if isPointwise {
                Profiler.measure(.convGemm) {
                    sgemm(M: OC, N: P, K: K, A: w, lda: K, B: xp + n0 * C * H * W, ldb: P,
                          beta: 0, C: yp + n0 * OC * P, ldc: P)
                }
            } else {
                let col = ws.slot(0, K * g * P)
                Profiler.measure(.im2col) { im2col(xp + n0 * C * H * W, g: g, H: H, W: W, OH: OH, OW: OW, col: col) }
                if g == 1 {
                    Profiler.measure(.convGemm) {
                        sgemm(M: OC, N: P, K: K, A: w, lda: K, B: col, ldb: P, beta: 0, C: yp + n0 * OC * P, ldc: P)
                    }
                } else {
                    let stage = ws.slot(1, OC * g * P)
                    Profiler.measure(.convGemm) {
                        sgemm(M: OC, N: g * P, K: K, A: w, lda: K, B: col, ldb: g * P, beta: 0, C: stage, ldc: g * P)
                    }
                    // stage[oc, i*P + p] -> y[n0+i, oc, p]
                    Profiler.measure(.staging) {
                    Parallel.chunks(g * OC, grain: 8) { lo, hi in
                        for r in lo..<hi {
                            let i = r / OC, oc = r % OC
                            (yp + ((n0 + i) * OC + oc) * P).update(from: stage + oc * g * P + i * P, count: P)
                        }
                    }
                    }
                }
            }
            n0 += g
        }
        addBias(N: N, P: P)
        return output
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
        let P = OH * OW, K = self.K
        let frozen = store.isFrozen(weight)
        let w = store.values + weight.offset
        let dw = store.grads + weight.offset
        let xp = x.data, dyp = dy.data
        precondition(dy.channelsLast == output.channelsLast, "conv backward: dy's layout is not the output's")
        precondition(!dy.bf16 || (Conv2d.backend == .onednn && Precision.current == .bf16 && bias == nil),
                     "conv backward: a bf16 dy needs oneDNN in bf16 (and no bias)")
        if needInputGrad {
            dinput.resize(x.shape, channelsLast: x.channelsLast)
            if !isPointwise && Conv2d.backend == .native { Profiler.measure(.im2col) { dinput.zero() } }
        }
        if !frozen, let b = bias {
            let db = store.grads + b.offset
            if dy.channelsLast {
                var s = [Float](repeating: 0, count: OC)
                for r in 0..<(N * P) { for oc in 0..<OC { s[oc] += dyp[r * OC + oc] } }
                for oc in 0..<OC { db[oc] += s[oc] }
            }
            for n in 0..<N where !dy.channelsLast {
                for oc in 0..<OC {
                    let row = dyp + (n * OC + oc) * P
                    var s: Float = 0
                    for p in 0..<P { s += row[p] }
                    db[oc] += s
                }
            }
        }
        if frozen && !needInputGrad { return }
        Profiler.countConv(2 * Double(N * OC * P * K) * ((frozen ? 0 : 1) + (needInputGrad ? 1 : 0)))
        if Conv2d.backend == .onednn {
            let dx = needInputGrad ? dinput.data : nil
            let xl: Int32 = x.channelsLast ? 1 : 0, yl: Int32 = dy.channelsLast ? 1 : 0
            let xb: Int32 = x.bf16 ? 1 : 0, dyb: Int32 = dy.bf16 ? 1 : 0
            oneDNN { d, bf16 in
                dt_dnnl_conv_backward(d, bf16, xl, yl, Int32(N), Int32(H), Int32(W), xp, xb, w, dyp, dyb, frozen ? nil : dw, dx)
            }
            return
        }
        if usesWinograd(H: H, W: W) {
            winogradBackward(x, dy, needInputGrad: needInputGrad, frozen: frozen)
            return
        }
        let dxp = dinput.data
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
                Profiler.measure(.staging) {
                    Parallel.chunks(g * OC, grain: 8) { lo, hi in
                        for r in lo..<hi {
                            let i = r / OC, oc = r % OC
                            (dyg + oc * g * P + i * P).update(from: dyp + ((n0 + i) * OC + oc) * P, count: P)
                        }
                    }
                }
            }
            if isPointwise {
                let xn = xp + n0 * C * H * W
                Profiler.measure(.convGemm) {
                    if !frozen {
                        sgemm(transB: true, M: OC, N: K, K: P, A: dyg, lda: P, B: xn, ldb: P, beta: 1, C: dw, ldc: K)
                    }
                    if needInputGrad {
                        sgemm(transA: true, M: K, N: P, K: OC, A: w, lda: K, B: dyg, ldb: P,
                              beta: 0, C: dxp + n0 * C * H * W, ldc: P)
                    }
                }
            } else {
                let col = ws.slot(0, K * g * P)
                if !frozen {
                    Profiler.measure(.im2col) { im2col(xp + n0 * C * H * W, g: g, H: H, W: W, OH: OH, OW: OW, col: col) }
                    // dW (OC, K) += dY (OC, gP) * col^T (gP, K)
                    Profiler.measure(.convGemm) {
                        sgemm(transB: true, M: OC, N: K, K: g * P, A: dyg, lda: g * P, B: col, ldb: g * P,
                              beta: 1, C: dw, ldc: K)
                    }
                }
                if needInputGrad {
                    // dcol (K, gP) = W^T (K, OC) * dY (OC, gP), then scatter-add into dx.
                    Profiler.measure(.convGemm) {
                        sgemm(transA: true, M: K, N: g * P, K: OC, A: w, lda: K, B: dyg, ldb: g * P,
                              beta: 0, C: col, ldc: g * P)
                    }
                    Profiler.measure(.im2col) { col2im(col, g: g, H: H, W: W, OH: OH, OW: OW, dx: dxp + n0 * C * H * W) }
                }
            }
            n0 += g
        }
    }

    /// Runs one CDNNL call on this layer's primitives (made on first use) in the
    /// current precision, timed; a failure (a shape oneDNN cannot run, no memory) is fatal.
    func oneDNN(_ call: (OpaquePointer, Int32) -> Int32) {
        let d = dnnl ?? dt_dnnl_conv_new(Int32(C), Int32(OC), Int32(KH), Int32(KW), Int32(stride), Int32(pad))!
        dnnl = d
        let rc = Profiler.measure(.dnnlConv) { call(d, Precision.current == .bf16 ? 1 : 0) }
        if rc != 0 { fatalError(String(cString: dt_dnnl_error())) }
    }

    /// GFLOP/s of oneDNN's n x n x n matmul (bf16 or fp32 operands, fp32 result) on its threads, best
    /// of 3 (0 if it failed): the GEMM roof under the oneDNN convolutions.
    public static func oneDNNMatmulGFLOPs(n: Int, bf16: Bool) -> Double {
        let t = dt_dnnl_matmul_seconds(Int32(n), Int32(n), Int32(n), bf16 ? 1 : 0, 3)
        return t > 0 ? 2 * Double(n) * Double(n) * Double(n) / t / 1e9 : 0
    }

    /// The oneDNN implementation of this layer's last forward ("" before one ran).
    public var oneDNNImplementation: String { dnnl.map { String(cString: dt_dnnl_conv_impl($0)) } ?? "" }

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
        Parallel.chunks(C * KH * KW, grain: 4) { lo, hi in
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
        Parallel.chunks(C, grain: 1) { lo, hi in
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
