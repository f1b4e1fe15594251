// Channels-last (NHWC) activations for the bf16 path.
//
// oneDNN's bf16 convolutions run as fast on NHWC tensors as on their blocked
// layout (bench/onednn_convs: 0.75 vs 0.73 s per ResNet-18 step at 224 px), so
// in bf16 the layers pass activations channels-last, as PyTorch's
// channels_last does: a convolution's fp32 output then needs no reorder, and
// its bf16 operands are a conversion in place of a transposition. `shape` stays
// (N, C, H, W); `Tensor.channelsLast` says the memory order is (N, H, W, C),
// rows of C values, R = N*H*W rows. BatchNorm, pooling and the residual add
// read either order; what leaves the network (CAM captures, the input
// gradient, the pooled features) is NCHW.
//
// The per-channel reductions here accumulate each channel over blocks of 64
// rows in float, then in Double (m = R values reach 400k at 224 px x 32).

import Foundation

extension Tensor {
    /// self = `x` in the asked memory order (a copy; a transposition when the orders differ, over `parallel`).
    public func assign(_ x: Tensor, channelsLast last: Bool, parallel: Parallel = Parallel(threads: 1)) {
        guard x.channelsLast != last else { return copy(from: x) }
        precondition(!x.bf16, "a layout change of bfloat16 memory")
        resize(x.shape, channelsLast: last)
        let N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
        let src = x.data, dst = data
        parallel.chunks(N * HW, grain: 256) { lo, hi in
            for r in lo..<hi {
                let n = r / HW, p = r % HW
                for c in 0..<C {
                    let nchw = (n * C + c) * HW + p, nhwc = r * C + c
                    if last { dst[nhwc] = src[nchw] } else { dst[nchw] = src[nhwc] }
                }
            }
        }
    }
}

extension Parallel {
    /// Per-chunk sums of `width` Doubles: body(lo, hi, partial) adds rows lo..<hi into
    /// its own zeroed `partial`; returns the sum of the partials.
    func reduce(_ n: Int, grain: Int, width: Int, _ body: (Int, Int, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
        let t = min(threads, max(1, n / max(grain, 1)))
        var partials = [Double](repeating: 0, count: t * width)
        partials.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            if t == 1 { body(0, n, base); return }
            DispatchQueue.concurrentPerform(iterations: t) { k in
                let lo = n * k / t, hi = n * (k + 1) / t
                if lo < hi { body(lo, hi, base + k * width) }
            }
        }
        guard t > 1 else { return partials }
        var total = [Double](repeating: 0, count: width)
        for k in 0..<t { for c in 0..<width { total[c] += partials[k * width + c] } }
        return total
    }
}

/// Channel-wise kernels on rows of C floats (NHWC).
enum NHWC {
    /// Sums over rows lo..<hi into `acc` (`width` Doubles): `add(row, block)` adds one row's
    /// terms into a float block, which is flushed into acc every 64 rows.
    @inline(__always)
    static func blockSums(_ lo: Int, _ hi: Int, width: Int, into acc: UnsafeMutablePointer<Double>,
                          _ add: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let block = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { block.deallocate() }
        var r = lo
        while r < hi {
            let end = min(r + 64, hi)
            block.update(repeating: 0, count: width)
            for row in r..<end { add(row, block) }
            for c in 0..<width { acc[c] += Double(block[c]) }
            r = end
        }
    }

    /// acc[c] += sum over rows of x, or of (x - mu)^2 when `mean` is given.
    @inline(__always)
    static func channelSums(_ x: UnsafePointer<Float>, _ lo: Int, _ hi: Int, C: Int, mean: UnsafePointer<Float>?,
                            into acc: UnsafeMutablePointer<Double>) {
        blockSums(lo, hi, width: C, into: acc) { row, block in
            let p = x + row * C
            var c = 0
            if let mean {
                while c + 16 <= C { let d = load16(p + c) - load16(mean + c); store16(load16(block + c) + d * d, block + c); c += 16 }
                while c < C { let d = p[c] - mean[c]; block[c] += d * d; c += 1 }
            } else {
                while c + 16 <= C { store16(load16(block + c) + load16(p + c), block + c); c += 16 }
                while c < C { block[c] += p[c]; c += 1 }
            }
        }
    }

    /// acc[c] += sum (x - k), acc[C + c] += sum (x - k)^2 over rows lo..<hi: both moments in one
    /// pass, about a shift k near the mean (so that the variance does not cancel).
    @inline(__always)
    static func shiftedMoments(_ x: UnsafePointer<Float>, _ lo: Int, _ hi: Int, C: Int, shift k: UnsafePointer<Float>,
                               into acc: UnsafeMutablePointer<Double>) {
        blockSums(lo, hi, width: 2 * C, into: acc) { row, block in
            let p = x + row * C
            var c = 0
            while c + 16 <= C {
                let d = load16(p + c) - load16(k + c)
                store16(load16(block + c) + d, block + c)
                store16(load16(block + C + c) + d * d, block + C + c)
                c += 16
            }
            while c < C { let d = p[c] - k[c]; block[c] += d; block[C + c] += d * d; c += 1 }
        }
    }

    /// y = x * scale + shift per channel (then max(., 0) when `relu`), rows lo..<hi; written as
    /// bfloat16 when `bf16` (an input only a bf16 convolution reads).
    @inline(__always)
    static func affine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, bf16: Bool, _ lo: Int, _ hi: Int, C: Int,
                       scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, relu: Bool) {
        let zero = V16()
        for row in lo..<hi {
            let p = x + row * C, o = row * C
            var c = 0
            while c + 16 <= C {
                var v = load16(p + c) * load16(scale + c) + load16(shift + c)
                if relu { v = v.replacing(with: zero, where: v .< zero) }
                put(v, y, o + c, bf16: bf16)
                c += 16
            }
            while c < C {
                let a = p[c] * scale[c] + shift[c]
                put(relu ? max(a, 0) : a, y, o + c, bf16: bf16)
                c += 1
            }
        }
    }

    /// The gradient reaching the BN's affine output: dy, zeroed where the fused
    /// ReLU's input x * scale + shift was not > 0 (recomputed as the forward
    /// computed it, so the mask is the forward's without reading y).
    @inline(__always)
    static func masked(_ dy: V16, _ x: V16, _ relu: ReLUMask?, _ c: Int) -> V16 {
        guard let relu else { return dy }
        let v = x * load16(relu.scale + c) + load16(relu.shift + c)
        return dy.replacing(with: V16(), where: .!(v .> V16()))
    }

    @inline(__always)
    static func masked(_ dy: Float, _ x: Float, _ relu: ReLUMask?, _ c: Int) -> Float {
        guard let relu else { return dy }
        return x * relu.scale[c] + relu.shift[c] > 0 ? dy : 0
    }

    /// The fused ReLU's input per channel: x * scale + shift.
    struct ReLUMask {
        let scale, shift: UnsafePointer<Float>
    }

    /// acc[c] += sum d, acc[C + c] += sum d * (x - mu) over rows lo..<hi, d = masked(dy).
    @inline(__always)
    static func gradientSums(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, _ lo: Int, _ hi: Int,
                             C: Int, mean: UnsafePointer<Float>, relu: ReLUMask?, into acc: UnsafeMutablePointer<Double>) {
        blockSums(lo, hi, width: 2 * C, into: acc) { row, block in
            let xr = x + row * C, dr = dy + row * C
            var c = 0
            while c + 16 <= C {
                let xv = load16(xr + c), d = masked(load16(dr + c), xv, relu, c)
                store16(load16(block + c) + d, block + c)
                store16(load16(block + C + c) + d * (xv - load16(mean + c)), block + C + c)
                c += 16
            }
            while c < C {
                let d = masked(dr[c], xr[c], relu, c)
                block[c] += d; block[C + c] += d * (xr[c] - mean[c])
                c += 1
            }
        }
    }

    /// dx = k * (d - a1 - (x - mu) * a2) per channel over rows lo..<hi, d = masked(dy); written as
    /// bfloat16 (nearest even) when `bf16`, for the convolution whose output gradient it is.
    @inline(__always)
    static func gradientApply(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, bf16: Bool,
                              _ lo: Int, _ hi: Int, C: Int, mean: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              a1: UnsafePointer<Float>, a2: UnsafePointer<Float>, relu: ReLUMask?) {
        for row in lo..<hi {
            let xr = x + row * C, dr = dy + row * C, o = row * C
            var c = 0
            while c + 16 <= C {
                let xv = load16(xr + c), d = masked(load16(dr + c), xv, relu, c)
                put(load16(k + c) * (d - load16(a1 + c) - (xv - load16(mean + c)) * load16(a2 + c)), dx, o + c, bf16: bf16)
                c += 16
            }
            while c < C {
                put(k[c] * (masked(dr[c], xr[c], relu, c) - a1[c] - (xr[c] - mean[c]) * a2[c]), dx, o + c, bf16: bf16)
                c += 1
            }
        }
    }

    /// y[i..<i+16] = v, as floats, or as bfloat16 values (UInt16 at element offsets i..<i+16) when `bf16`.
    @inline(__always)
    static func put(_ v: V16, _ y: UnsafeMutablePointer<Float>, _ i: Int, bf16: Bool) {
        if bf16 { storeBF16(v, UnsafeMutableRawPointer(y) + 2 * i) } else { store16(v, y + i) }
    }

    /// y[i] = v, as a float or (`bf16`) as a bfloat16 value, as the vector `put` does.
    @inline(__always)
    static func put(_ v: Float, _ y: UnsafeMutablePointer<Float>, _ i: Int, bf16: Bool) {
        if bf16 { UnsafeMutableRawPointer(y).storeBytes(of: BF16.bits(v), toByteOffset: 2 * i, as: UInt16.self) } else { y[i] = v }
    }

    /// 16 floats rounded to bfloat16 (nearest even; NaN stays a quiet NaN), stored as 16 UInt16.
    @inline(__always)
    static func storeBF16(_ v: V16, _ p: UnsafeMutableRawPointer) {
        let u = unsafeBitCast(v, to: SIMD16<UInt32>.self)
        var r = (u &+ 0x7FFF &+ ((u &>> 16) & 1)) &>> 16
        r.replace(with: (u &>> 16) | 0x40, where: v .!= v)
        p.storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: r), as: SIMD16<UInt16>.self)
    }
}
