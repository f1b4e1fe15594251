// Max pooling (any kernel/stride/padding; ResNet uses 3x3 s2 p1) and adaptive
// average pooling to 1x1.
//
// Shapes: x (N, C, H, W) -> y (N, C, OH, OW) for max pooling, (N, C) for the
// global average (flattened, as torchvision's `torch.flatten(x, 1)`). Either
// memory order (ChannelsLast.swift); max pooling keeps it, the average's
// (N, C) is the same in both.

public final class MaxPool2d {
    public let kernel, stride, pad: Int
    public let output = Tensor()
    public let dinput = Tensor()
    /// The threads its loops split over (its engine's).
    let parallel: Parallel
    /// Flat index into x[n, c] (h*W + w) of each output's maximum.
    private var argmax: [Int32] = []
    private var inShape: [Int] = []

    public init(kernel: Int = 3, stride: Int = 2, pad: Int = 1, engine: Engine = Engine()) {
        self.kernel = kernel; self.stride = stride; self.pad = pad; self.parallel = engine.parallel
    }

    /// Padding counts as -inf; ties keep the first maximum in (kh, kw) scan
    /// order, as PyTorch's CPU kernel does.
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
        let OH = (H + 2 * pad - kernel) / stride + 1, OW = (W + 2 * pad - kernel) / stride + 1
        output.resize([N, C, OH, OW], channelsLast: x.channelsLast)
        inShape = x.shape
        if argmax.count < output.count { argmax = Array(repeating: 0, count: output.count) }
        if x.channelsLast { return forwardChannelsLast(x) }
        let xp = x.data, yp = output.data
        let k = kernel, s = stride, pad = self.pad
        let fast = k == 3 && s == 2 && pad == 1
        argmax.withUnsafeMutableBufferPointer { am in
            let amp = am.baseAddress!
            parallel.chunks(N * C, grain: 4) { lo, hi in
                for nc in lo..<hi {
                    let src = xp + nc * H * W, dst = yp + nc * OH * OW, idx = amp + nc * OH * OW
                    for oh in 0..<OH {
                        let h0 = oh * s - pad
                        func scalar(_ ow: Int) {
                            let w0 = ow * s - pad
                            var best = -Float.infinity, bi: Int32 = -1
                            for kh in 0..<k {
                                let ih = h0 + kh
                                if ih < 0 || ih >= H { continue }
                                for kw in 0..<k {
                                    let iw = w0 + kw
                                    if iw < 0 || iw >= W { continue }
                                    let v = src[ih * W + iw]
                                    if v > best || v.isNaN { best = v; bi = Int32(ih * W + iw) }
                                }
                            }
                            dst[oh * OW + ow] = best
                            idx[oh * OW + ow] = bi
                        }
                        // 3x3 stride 2 (ResNet's stem): 8 outputs at a time where all their columns are inside.
                        var ow = 0
                        if fast && OW > 0 {
                            scalar(0)
                            ow = MaxPool2d.stem8(src, H: H, W: W, h0: h0, dst: dst + oh * OW, idx: idx + oh * OW, OW: OW)
                        }
                        while ow < OW { scalar(ow); ow += 1 }
                    }
                }
            }
        }
        return output
    }

    /// Outputs 1, 2, ... of one output row of a 3x3 stride-2 padding-1 pooling,
    /// 8 at a time while their columns 2ow-1 ... 2ow+16 are inside the row (the
    /// even/odd halves of two 16-float loads are the three column candidates);
    /// the scalar loop's scan order (kh, then kw) and tie/NaN rule. Returns the
    /// first output it did not write.
    @inline(__always)
    static func stem8(_ src: UnsafeMutablePointer<Float>, H: Int, W: Int, h0: Int,
                      dst: UnsafeMutablePointer<Float>, idx: UnsafeMutablePointer<Int32>, OW: Int) -> Int {
        let lanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
        var ow = 1
        while ow + 8 <= OW && 2 * ow + 17 <= W {
            var best = SIMD8<Float>(repeating: -.infinity), bi = SIMD8<Int32>(repeating: -1)
            for ih in max(h0, 0)..<min(h0 + 3, H) {
                let row = UnsafeRawPointer(src + ih * W + 2 * ow - 1)
                let a = row.loadUnaligned(as: SIMD16<Float>.self)
                let b = row.loadUnaligned(fromByteOffset: 8, as: SIMD16<Float>.self)
                let cols = lanes &+ Int32(ih * W + 2 * ow - 1)
                @inline(__always) func visit(_ v: SIMD8<Float>, _ kw: Int32) {
                    let take = (v .> best) .| (v .!= v)
                    best.replace(with: v, where: take)
                    bi.replace(with: cols &+ kw, where: take)
                }
                visit(a.evenHalf, 0)
                visit(a.oddHalf, 1)
                visit(b.evenHalf, 2)
            }
            UnsafeMutableRawPointer(dst + ow).storeBytes(of: best, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(idx + ow).storeBytes(of: bi, as: SIMD8<Int32>.self)
            ow += 8
        }
        return ow
    }

    /// NHWC: the same scan and tie/NaN rule per channel, 16 channels at a time.
    private func forwardChannelsLast(_ x: Tensor) -> Tensor {
        let N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
        let OH = output.shape[2], OW = output.shape[3]
        let xp = x.data, yp = output.data, k = kernel, s = stride, pad = self.pad
        argmax.withUnsafeMutableBufferPointer { am in
            let amp = am.baseAddress!
            parallel.chunks(N * OH, grain: 1) { lo, hi in
                for r in lo..<hi {
                    let n = r / OH, h0 = (r % OH) * s - pad
                    for ow in 0..<OW {
                        let w0 = ow * s - pad, o = (r * OW + ow) * C
                        let dst = yp + o, idx = amp + o
                        for c in 0..<C { dst[c] = -.infinity; idx[c] = -1 }
                        for ih in max(h0, 0)..<min(h0 + k, H) {
                            for iw in max(w0, 0)..<min(w0 + k, W) {
                                let src = xp + ((n * H + ih) * W + iw) * C, flat = Int32(ih * W + iw)
                                var c = 0
                                while c + 16 <= C {
                                    let v = load16(src + c), best = load16(dst + c)
                                    let take = (v .> best) .| (v .!= v)
                                    store16(best.replacing(with: v, where: take), dst + c)
                                    let ip = UnsafeMutableRawPointer(idx + c)
                                    var bi = ip.loadUnaligned(as: SIMD16<Int32>.self)
                                    bi.replace(with: flat, where: take)
                                    ip.storeBytes(of: bi, as: SIMD16<Int32>.self)
                                    c += 16
                                }
                                while c < C {
                                    let v = src[c]
                                    if v > dst[c] || v.isNaN { dst[c] = v; idx[c] = flat }
                                    c += 1
                                }
                            }
                        }
                    }
                }
            }
        }
        return output
    }

    /// dx[argmax] += dy.
    public func backward(_ dy: Tensor) {
        dinput.resize(inShape, channelsLast: output.channelsLast)
        dinput.zero()
        if output.channelsLast {
            let N = inShape[0], C = inShape[1], HW = inShape[2] * inShape[3], OHW = output.shape[2] * output.shape[3]
            let dyp = dy.data, dxp = dinput.data
            argmax.withUnsafeBufferPointer { am in
                let amp = am.baseAddress!
                parallel.chunks(N, grain: 1) { lo, hi in
                    for n in lo..<hi {
                        let d = dxp + n * HW * C
                        for p in (n * OHW)..<((n + 1) * OHW) {
                            for c in 0..<C where amp[p * C + c] >= 0 { d[Int(amp[p * C + c]) * C + c] += dyp[p * C + c] }
                        }
                    }
                }
            }
            return
        }
        let NC = inShape[0] * inShape[1], HW = inShape[2] * inShape[3]
        let OHW = output.shape[2] * output.shape[3]
        let dyp = dy.data, dxp = dinput.data
        argmax.withUnsafeBufferPointer { am in
            let amp = am.baseAddress!
            parallel.chunks(NC, grain: 4) { lo, hi in
                for nc in lo..<hi {
                    let d = dxp + nc * HW, g = dyp + nc * OHW, idx = amp + nc * OHW
                    for o in 0..<OHW where idx[o] >= 0 { d[Int(idx[o])] += g[o] }
                }
            }
        }
    }
}

public final class GlobalAvgPool {
    public let output = Tensor()
    public let dinput = Tensor()
    private var inShape: [Int] = []
    private var inChannelsLast = false
    public init() {}

    /// y[n, c] = mean over (h, w) of x[n, c].
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
        inShape = x.shape
        inChannelsLast = x.channelsLast
        output.resize([N, C])
        let inv = 1 / Float(HW)
        if x.channelsLast {
            // The same order of additions per channel as below (p = 0, 1, ...).
            for n in 0..<N {
                let y = output.data + n * C
                y.update(repeating: 0, count: C)
                for p in 0..<HW { let row = x.data + (n * HW + p) * C; for c in 0..<C { y[c] += row[c] } }
                for c in 0..<C { y[c] *= inv }
            }
            return output
        }
        for nc in 0..<(N * C) {
            let row = x.data + nc * HW
            var s: Float = 0
            for p in 0..<HW { s += row[p] }
            output.data[nc] = s * inv
        }
        return output
    }

    /// dx[n, c, h, w] = dy[n, c] / (H*W).
    public func backward(_ dy: Tensor) {
        dinput.resize(inShape, channelsLast: inChannelsLast)
        let NC = inShape[0] * inShape[1], HW = inShape[2] * inShape[3]
        let inv = 1 / Float(HW)
        if inChannelsLast {
            let C = inShape[1]
            for n in 0..<inShape[0] {
                for p in 0..<HW { let row = dinput.data + (n * HW + p) * C; for c in 0..<C { row[c] = dy.data[n * C + c] * inv } }
            }
            return
        }
        for nc in 0..<NC {
            let v = dy.data[nc] * inv, row = dinput.data + nc * HW
            for p in 0..<HW { row[p] = v }
        }
    }
}
