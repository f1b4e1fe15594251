// BatchNorm2d (Ioffe & Szegedy 2015) with an optional fused ReLU.
//
// Shapes: x, y (N, C, H, W); statistics per channel over m = N*H*W values.
// Train:  mu = mean(x), var = mean((x - mu)^2) (biased, used to normalise),
//         xhat = (x - mu) * istd, istd = 1 / sqrt(var + eps), y = gamma*xhat + beta;
//         running_mean += momentum * (mu - running_mean),
//         running_var  += momentum * (var * m/(m-1) - running_var)   (unbiased, as PyTorch),
//         num_batches_tracked += 1.
// Eval:   the running statistics replace mu and var.
// Cached for backward: mu and istd per channel, and a reference to x
// (the producing conv's output, which nothing overwrites before backward).
//
// Backward (train), with sums over the m values of a channel:
//   dbeta = sum(dy), dgamma = sum(dy * xhat),
//   dx = gamma * istd * (dy - dbeta/m - xhat * dgamma/m).
// In eval mode the statistics are constants: dx = gamma * istd * dy.
// With the fused ReLU, dy is zeroed where the pre-activation was not > 0. The
// NCHW paths read that from y (y > 0 exactly there); the channels-last path
// recomputes x * scale + shift instead (its y may be bfloat16, or already
// overwritten by a later layer; NHWC.masked).
//
// Synchronised (SyncBatchNorm, `statisticsReducer` set, train mode): the
// per-channel sums are summed over all ranks before use, so mu and var are
// those of the global batch (count M = sum of the ranks' m), and in backward
// sum(dy) and sum(dy * xhat) are global too; dgamma and dbeta stay the rank's
// own sums (the gradient all-reduce averages them, as every parameter).

public final class BatchNorm2d {
    public let C: Int
    public let eps: Float = 1e-5
    public let momentum: Float = 0.1
    public let fusedReLU: Bool
    public let weight, bias: ParamRef
    let runningMean, runningVar, tracked: ParamRef
    unowned let store: ParameterStore
    /// Train mode uses batch statistics and updates the running ones.
    public var training = true
    /// Sums a Double array over all ranks in place (SyncBatchNorm); nil: this rank's batch alone.
    public var statisticsReducer: ((UnsafeMutablePointer<Double>, Int) -> Void)?
    public let output = Tensor()
    public let dinput = Tensor()
    /// The threads its loops split over (its engine's).
    let parallel: Parallel
    private var input: Tensor?
    private var mean: [Float], istd: [Float]
    private var usedBatchStats = true

    public init(store: ParameterStore, name: String, C: Int, relu: Bool, engine: Engine = Engine()) {
        self.C = C; self.store = store; self.fusedReLU = relu; self.parallel = engine.parallel
        weight = store.declare(name + ".weight", [C], .parameter)
        bias = store.declare(name + ".bias", [C], .parameter)
        runningMean = store.declare(name + ".running_mean", [C], .buffer)
        runningVar = store.declare(name + ".running_var", [C], .buffer)
        tracked = store.declare(name + ".num_batches_tracked", [], .counter)
        mean = Array(repeating: 0, count: C)
        istd = Array(repeating: 1, count: C)
    }

    /// weight 1, bias 0, running mean 0, running var 1, counter 0.
    public func resetParameters(zeroWeight: Bool = false) {
        let g = store.values + weight.offset, b = store.values + bias.offset
        let rm = store.buffers + runningMean.offset, rv = store.buffers + runningVar.offset
        for c in 0..<C { g[c] = zeroWeight ? 0 : 1; b[c] = 0; rm[c] = 0; rv[c] = 1 }
        store.counters[tracked.offset] = 0
    }

    @discardableResult
    /// `bf16Output`: on channels-last input, y is written as bfloat16 (its only reader a bf16
    /// convolution; backward does not read y there).
    public func forward(_ x: Tensor, bf16Output: Bool = false) -> Tensor {
        if x.channelsLast { return forwardChannelsLast(x, training ? statisticsReducer : nil, bf16: bf16Output) }
        if training, let reduce = statisticsReducer { return forwardSynchronised(x, reduce) }
        let N = x.shape[0], HW = x.shape[2] * x.shape[3]
        prepare(x, batchStatistics: training)
        let xp = x.data, yp = output.data
        let g = store.values + weight.offset, b = store.values + bias.offset
        let rm = store.buffers + runningMean.offset, rv = store.buffers + runningVar.offset
        let m = N * HW, C = self.C, eps = self.eps, momentum = self.momentum, relu = fusedReLU
        let training = self.training
        mean.withUnsafeMutableBufferPointer { meanp in
        istd.withUnsafeMutableBufferPointer { istdp in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi {
                    var mu: Float, inv: Float
                    if training {
                        // Two passes in Double for the statistics: m reaches 400k at
                        // 224x224 x 32, where a float running sum loses digits.
                        var s = 0.0
                        for n in 0..<N { s += Double(vsum(xp + (n * C + c) * HW, HW)) }
                        let mu64 = s / Double(m)
                        mu = Float(mu64)
                        var ss = 0.0
                        for n in 0..<N { ss += Double(vsumSquaredDeviations(xp + (n * C + c) * HW, HW, mu)) }
                        let v = ss / Double(m)
                        inv = Float(1.0 / (v + Double(eps)).squareRoot())
                        let unbiased = m > 1 ? v * Double(m) / Double(m - 1) : v
                        rm[c] = (1 - momentum) * rm[c] + momentum * mu
                        rv[c] = (1 - momentum) * rv[c] + momentum * Float(unbiased)
                    } else {
                        mu = rm[c]
                        inv = 1 / (rv[c] + eps).squareRoot()
                    }
                    meanp[c] = mu; istdp[c] = inv
                    let scale = g[c] * inv, shift = b[c] - mu * scale
                    for n in 0..<N {
                        let src = xp + (n * C + c) * HW, dst = yp + (n * C + c) * HW
                        if relu {
                            for p in 0..<HW { dst[p] = max(src[p] * scale + shift, 0) }
                        } else {
                            for p in 0..<HW { dst[p] = src[p] * scale + shift }
                        }
                    }
                }
            }
        }
        }
        if training { store.counters[tracked.offset] += 1 }
        return output
    }

    /// dy = dL/dy. Accumulates dgamma, dbeta (unless frozen); writes dinput, in bfloat16 when
    /// `bf16Gradient` and the input is channels-last (for a bf16 convolution's backward).
    public func backward(_ dy: Tensor, bf16Gradient: Bool = false) {
        if input?.channelsLast == true {
            return backwardChannelsLast(dy, usedBatchStats ? statisticsReducer : nil, bf16: bf16Gradient)
        }
        if usedBatchStats, let reduce = statisticsReducer { return backwardSynchronised(dy, reduce) }
        let o = beginBackward(dy)
        let N = o.N, HW = o.HW, xp = o.x, yp = o.y, dyp = o.dy, dxp = o.dx
        let g = o.gamma, dg = o.dgamma, db = o.dbeta, frozen = o.frozen
        let C = self.C
        let m = Float(N * HW), relu = fusedReLU, batchStats = usedBatchStats
        mean.withUnsafeBufferPointer { meanp in
        istd.withUnsafeBufferPointer { istdp in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi {
                    let mu = meanp[c], inv = istdp[c]
                    // Sums of dy and dy*xhat (after the ReLU mask).
                    var sdy = 0.0, sdyx = 0.0
                    for n in 0..<N {
                        let off = (n * C + c) * HW
                        let (a, b) = vsumGradients(x: xp + off, y: yp + off, dy: dyp + off, HW, mu: mu, relu: relu)
                        sdy += Double(a); sdyx += Double(b)
                    }
                    let sumDy = Float(sdy), sumDyXhat = Float(sdyx) * inv
                    if !frozen { db[c] += sumDy; dg[c] += sumDyXhat }
                    let k = g[c] * inv
                    // dx = k * (dy - sumDy/m - xhat * sumDyXhat/m), xhat = (x - mu)*inv
                    let a1 = batchStats ? sumDy / m : 0
                    let a2 = batchStats ? sumDyXhat / m * inv : 0
                    for n in 0..<N {
                        let off = (n * C + c) * HW
                        let xr = xp + off, yr = yp + off, dr = dyp + off, out = dxp + off
                        if relu {
                            for p in 0..<HW {
                                let d = yr[p] > 0 ? dr[p] : 0
                                out[p] = k * (d - a1 - (xr[p] - mu) * a2)
                            }
                        } else {
                            for p in 0..<HW { out[p] = k * (dr[p] - a1 - (xr[p] - mu) * a2) }
                        }
                    }
                }
            }
        }
        }
    }

    // MARK: synchronised over ranks

    /// Shapes the output and keeps the input for backward.
    private func prepare(_ x: Tensor, batchStatistics: Bool) {
        precondition(x.shape[1] == C, "batchnorm expects \(C) channels, got \(x.shape)")
        output.resize(x.shape, channelsLast: x.channelsLast)
        input = x
        usedBatchStats = batchStatistics
    }

    private func forwardSynchronised(_ x: Tensor, _ reduce: (UnsafeMutablePointer<Double>, Int) -> Void) -> Tensor {
        let N = x.shape[0], HW = x.shape[2] * x.shape[3], C = self.C
        prepare(x, batchStatistics: true)
        let xp = x.data, yp = output.data
        let g = store.values + weight.offset, b = store.values + bias.offset
        // Sums over this rank, then over all ranks: sum(x) per channel and the count; then sum((x - mu)^2).
        var sums = [Double](repeating: 0, count: C + 1)
        sums.withUnsafeMutableBufferPointer { s in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi { for n in 0..<N { s[c] += Double(vsum(xp + (n * C + c) * HW, HW)) } }
            }
            s[C] = Double(N * HW)
            reduce(s.baseAddress!, C + 1)
        }
        let M = sums[C]
        for c in 0..<C { mean[c] = Float(sums[c] / M) }
        var deviations = [Double](repeating: 0, count: C)
        mean.withUnsafeBufferPointer { meanp in deviations.withUnsafeMutableBufferPointer { d in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi { for n in 0..<N { d[c] += Double(vsumSquaredDeviations(xp + (n * C + c) * HW, HW, meanp[c])) } }
            }
            reduce(d.baseAddress!, C)
        } }
        updateStatistics(variance: { deviations[$0] / M }, count: M)
        let relu = fusedReLU
        mean.withUnsafeBufferPointer { meanp in istd.withUnsafeBufferPointer { istdp in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi {
                    let scale = g[c] * istdp[c], shift = b[c] - meanp[c] * scale
                    for n in 0..<N {
                        let src = xp + (n * C + c) * HW, dst = yp + (n * C + c) * HW
                        if relu { for p in 0..<HW { dst[p] = max(src[p] * scale + shift, 0) } } else {
                            for p in 0..<HW { dst[p] = src[p] * scale + shift }
                        }
                    }
                }
            }
        } }
        return output
    }

    /// What every backward path reads and writes: sizes, x, y, dy, dx, gamma, dgamma, dbeta,
    /// and whether gamma is frozen (`beginBackward`).
    private struct BackwardOperands {
        let N, HW: Int
        let x, y, dy, dx: UnsafeMutablePointer<Float>
        let gamma, dgamma, dbeta: UnsafeMutablePointer<Float>
        let frozen: Bool
    }

    /// The forward's input and its sizes, dinput shaped like it.
    private func beginBackward(_ dy: Tensor) -> BackwardOperands {
        guard let x = input else { preconditionFailure("batchnorm backward before forward") }
        precondition(dy.channelsLast == x.channelsLast && dy.shape == x.shape, "batchnorm backward: dy \(dy.shape) unlike x \(x.shape)")
        dinput.resize(x.shape, channelsLast: x.channelsLast)
        return BackwardOperands(N: x.shape[0], HW: x.shape[2] * x.shape[3], x: x.data, y: output.data, dy: dy.data, dx: dinput.data,
                                gamma: store.values + weight.offset, dgamma: store.grads + weight.offset,
                                dbeta: store.grads + bias.offset, frozen: store.isFrozen(weight))
    }

    private func backwardSynchronised(_ dy: Tensor, _ reduce: (UnsafeMutablePointer<Double>, Int) -> Void) {
        let o = beginBackward(dy)
        let N = o.N, HW = o.HW, xp = o.x, yp = o.y, dyp = o.dy, dxp = o.dx
        let g = o.gamma, dg = o.dgamma, db = o.dbeta, frozen = o.frozen
        let C = self.C
        let relu = fusedReLU
        // [sum(dy) per channel, sum(dy * (x - mu)) per channel, count]: this rank's, then all ranks'.
        var local = [Double](repeating: 0, count: 2 * C + 1)
        mean.withUnsafeBufferPointer { meanp in local.withUnsafeMutableBufferPointer { s in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi {
                    for n in 0..<N {
                        let off = (n * C + c) * HW
                        let (a, b) = vsumGradients(x: xp + off, y: yp + off, dy: dyp + off, HW, mu: meanp[c], relu: relu)
                        s[c] += Double(a); s[C + c] += Double(b)
                    }
                }
            }
            s[2 * C] = Double(N * HW)
        } }
        var global = local
        global.withUnsafeMutableBufferPointer { reduce($0.baseAddress!, 2 * C + 1) }
        let M = Float(global[2 * C])
        mean.withUnsafeBufferPointer { meanp in istd.withUnsafeBufferPointer { istdp in
            parallel.chunks(C, grain: 1) { lo, hi in
                for c in lo..<hi {
                    let mu = meanp[c], inv = istdp[c]
                    if !frozen { db[c] += Float(local[c]); dg[c] += Float(local[C + c]) * inv }
                    let k = g[c] * inv
                    let a1 = Float(global[c]) / M, a2 = Float(global[C + c]) * inv / M * inv
                    for n in 0..<N {
                        let off = (n * C + c) * HW
                        let xr = xp + off, yr = yp + off, dr = dyp + off, out = dxp + off
                        if relu {
                            for p in 0..<HW { out[p] = k * ((yr[p] > 0 ? dr[p] : 0) - a1 - (xr[p] - mu) * a2) }
                        } else {
                            for p in 0..<HW { out[p] = k * (dr[p] - a1 - (xr[p] - mu) * a2) }
                        }
                    }
                }
            }
        } }
    }

    // MARK: channels-last (NHWC: rows of C values; ChannelsLast.swift)

    /// x * scale + shift per channel, the affine map of the last channels-last forward (its ReLU mask).
    private var scale: [Float] = [], shift: [Float] = []

    /// As forward and forwardSynchronised, on NHWC: statistics over all rows
    /// (summed over ranks by `reduce` when given), then y row by row. One rank
    /// takes both moments in one pass about the mean of the first 64 rows;
    /// over ranks, mean then squared deviations (every rank needs the same shift).
    private func forwardChannelsLast(_ x: Tensor, _ reduce: ((UnsafeMutablePointer<Double>, Int) -> Void)?, bf16: Bool) -> Tensor {
        let R = x.shape[0] * x.shape[2] * x.shape[3], C = self.C
        prepare(x, batchStatistics: training)
        if bf16 { output.resize(x.shape, channelsLast: true, bf16: true) }
        let xp = x.data, yp = output.data
        let g = store.values + weight.offset, b = store.values + bias.offset
        if training, let reduce {
            var sums = parallel.reduce(R, grain: 256, width: C) { lo, hi, acc in NHWC.channelSums(xp, lo, hi, C: C, mean: nil, into: acc) }
            sums.append(Double(R))
            sums.withUnsafeMutableBufferPointer { reduce($0.baseAddress!, C + 1) }
            let M = sums[C]
            for c in 0..<C { mean[c] = Float(sums[c] / M) }
            var deviations = mean.withUnsafeBufferPointer { mp in
                parallel.reduce(R, grain: 256, width: C) { lo, hi, acc in NHWC.channelSums(xp, lo, hi, C: C, mean: mp.baseAddress!, into: acc) }
            }
            deviations.withUnsafeMutableBufferPointer { reduce($0.baseAddress!, C) }
            updateStatistics(variance: { deviations[$0] / M }, count: M)
        } else if training {
            var k = [Float](repeating: 0, count: C)
            let head = min(R, 64)
            for r in 0..<head { for c in 0..<C { k[c] += xp[r * C + c] } }
            for c in 0..<C { k[c] /= Float(head) }
            let m = k.withUnsafeBufferPointer { kp in
                parallel.reduce(R, grain: 256, width: 2 * C) { lo, hi, acc in NHWC.shiftedMoments(xp, lo, hi, C: C, shift: kp.baseAddress!, into: acc) }
            }
            let M = Double(R)
            var variance = [Double](repeating: 0, count: C)
            for c in 0..<C {
                let d = m[c] / M
                mean[c] = Float(Double(k[c]) + d)
                variance[c] = max(m[C + c] / M - d * d, 0)
            }
            updateStatistics(variance: { variance[$0] }, count: M)
        } else {
            let rm = store.buffers + runningMean.offset, rv = store.buffers + runningVar.offset
            for c in 0..<C { mean[c] = rm[c]; istd[c] = 1 / (rv[c] + eps).squareRoot() }
        }
        scale = (0..<C).map { g[$0] * istd[$0] }
        shift = (0..<C).map { b[$0] - mean[$0] * scale[$0] }
        let relu = fusedReLU
        scale.withUnsafeBufferPointer { sp in shift.withUnsafeBufferPointer { tp in
            parallel.chunks(R, grain: 256) { lo, hi in
                NHWC.affine(xp, yp, bf16: bf16, lo, hi, C: C, scale: sp.baseAddress!, shift: tp.baseAddress!, relu: relu)
            }
        } }
        return output
    }

    /// As backward and backwardSynchronised, on NHWC; the ReLU mask from x and the forward's affine map.
    private func backwardChannelsLast(_ dy: Tensor, _ reduce: ((UnsafeMutablePointer<Double>, Int) -> Void)?, bf16: Bool) {
        let o = beginBackward(dy)
        let N = o.N, HW = o.HW, xp = o.x, dyp = o.dy, dxp = o.dx
        let g = o.gamma, dg = o.dgamma, db = o.dbeta, frozen = o.frozen
        if bf16 { dinput.resize(dinput.shape, channelsLast: true, bf16: true) }
        let C = self.C, R = N * HW, batchStats = usedBatchStats
        scale.withUnsafeBufferPointer { sp in shift.withUnsafeBufferPointer { tp in
            let relu = fusedReLU ? NHWC.ReLUMask(scale: sp.baseAddress!, shift: tp.baseAddress!) : nil
            let local = mean.withUnsafeBufferPointer { mp in
                parallel.reduce(R, grain: 256, width: 2 * C) { lo, hi, acc in
                    NHWC.gradientSums(x: xp, dy: dyp, lo, hi, C: C, mean: mp.baseAddress!, relu: relu, into: acc)
                }
            }
            var global = local + [Double(R)]
            if let reduce { global.withUnsafeMutableBufferPointer { reduce($0.baseAddress!, 2 * C + 1) } }
            let M = Float(global[2 * C])
            var k = [Float](repeating: 0, count: C), a1 = k, a2 = k
            for c in 0..<C {
                let inv = istd[c]
                if !frozen { db[c] += Float(local[c]); dg[c] += Float(local[C + c]) * inv }
                k[c] = g[c] * inv
                a1[c] = batchStats ? Float(global[c]) / M : 0
                a2[c] = batchStats ? Float(global[C + c]) * inv / M * inv : 0
            }
            mean.withUnsafeBufferPointer { mp in k.withUnsafeBufferPointer { kp in a1.withUnsafeBufferPointer { a1p in
            a2.withUnsafeBufferPointer { a2p in
                parallel.chunks(R, grain: 256) { lo, hi in
                    NHWC.gradientApply(x: xp, dy: dyp, dx: dxp, bf16: bf16, lo, hi, C: C, mean: mp.baseAddress!, k: kp.baseAddress!,
                                       a1: a1p.baseAddress!, a2: a2p.baseAddress!, relu: relu)
                }
            } } } }
        } }
    }

    /// istd from the batch variance (biased, `variance(c)`), and the running
    /// statistics' momentum update with the unbiased one over `count` values.
    private func updateStatistics(variance: (Int) -> Double, count M: Double) {
        let rm = store.buffers + runningMean.offset, rv = store.buffers + runningVar.offset
        for c in 0..<C {
            let v = variance(c)
            istd[c] = Float(1.0 / (v + Double(eps)).squareRoot())
            let unbiased = M > 1 ? v * M / (M - 1) : v
            rm[c] = (1 - momentum) * rm[c] + momentum * mean[c]
            rv[c] = (1 - momentum) * rv[c] + momentum * Float(unbiased)
        }
        store.counters[tracked.offset] += 1
    }
}
