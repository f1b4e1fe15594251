import Foundation
import Net

// The methods: each a small piece over the pipeline in CAM.swift. Sums over
// (h, w) are written sum_p; A, G are (N, C, h, w).

/// Grad-CAM (Selvaraju et al. 2017, eq. 1): w_c = (1/hw) sum_p G_c.
public struct GradCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] {
        let g = input.G!.data, hw = input.hw
        return (0..<(input.N * input.C)).map { nc in
            var s: Float = 0
            for p in 0..<hw { s += g[nc * hw + p] }
            return s / Float(hw)
        }
    }
}

/// HiResCAM (Draelos & Carin 2020, eq. 4): the map is sum_c G_c * A_c, elementwise,
/// so it equals Grad-CAM when G is constant over space.
public struct HiResCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] { GradCAM().channelWeights(input) }
    public func saliency(_ input: CAMInput) -> [Float] { channelSumOfGradientTimesActivation(input) { $0 } }
}

/// Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): alpha = G^2 / (2 G^2 + sum_p A * G^3 + eps),
/// zero where G = 0; w_c = sum_p alpha * ReLU(G). eps = 1e-6 as pytorch-grad-cam.
public struct GradCAMPlusPlus: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] {
        let a = input.A.data, g = input.G!.data, hw = input.hw
        return (0..<(input.N * input.C)).map { nc in
            var sumA: Float = 0
            for p in 0..<hw { sumA += a[nc * hw + p] }
            var w: Float = 0
            for p in 0..<hw {
                let gi = g[nc * hw + p]
                if gi == 0 { continue }
                let g2 = gi * gi, g3 = g2 * gi
                let alpha = g2 / (2 * g2 + sumA * g3 + 1e-6)
                w += max(gi, 0) * alpha
            }
            return w
        }
    }
}

/// XGrad-CAM (Fu et al. 2020, eq. 7): w_c = sum_p G_c A_c / (sum_p A_c + eps).
public struct XGradCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] {
        let a = input.A.data, g = input.G!.data, hw = input.hw
        return (0..<(input.N * input.C)).map { nc in
            var sumA: Float = 0, s: Float = 0
            for p in 0..<hw { sumA += a[nc * hw + p] }
            for p in 0..<hw { s += g[nc * hw + p] * a[nc * hw + p] / (sumA + 1e-7) }
            return s
        }
    }
}

/// LayerCAM (Jiang et al. 2021, eq. 5): sum_c ReLU(G_c) * A_c, elementwise.
public struct LayerCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] { GradCAM().channelWeights(input) }
    public func saliency(_ input: CAMInput) -> [Float] { channelSumOfGradientTimesActivation(input) { max($0, 0) } }
}

/// sum_c f(G_c) * A_c, elementwise over space (HiResCAM: f = identity, LayerCAM: ReLU).
@inline(__always)
func channelSumOfGradientTimesActivation(_ input: CAMInput, _ f: (Float) -> Float) -> [Float] {
    let N = input.N, C = input.C, hw = input.hw
    let a = input.A.data, g = input.G!.data
    var out = [Float](repeating: 0, count: N * hw)
    for n in 0..<N { for c in 0..<C { for p in 0..<hw {
        let i = (n * C + c) * hw + p
        out[n * hw + p] += f(g[i]) * a[i]
    } } }
    return out
}

/// Eigen-CAM (Muhammad & Yeasin 2020): the projection of the centred (hw, C)
/// activation matrix on its first right singular vector.
public struct EigenCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { false }
    public func channelWeights(_ input: CAMInput) -> [Float] { [] }
    public func saliency(_ input: CAMInput) -> [Float] {
        firstComponentProjection(input.A.data, N: input.N, C: input.C, hw: input.hw)
    }
}

/// Eigen-Grad-CAM: Eigen-CAM of G * A.
public struct EigenGradCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { true }
    public func channelWeights(_ input: CAMInput) -> [Float] { [] }
    public func saliency(_ input: CAMInput) -> [Float] {
        let n = input.A.count
        var ga = [Float](repeating: 0, count: n)
        for i in 0..<n { ga[i] = input.G!.data[i] * input.A.data[i] }
        return ga.withUnsafeMutableBufferPointer {
            firstComponentProjection($0.baseAddress!, N: input.N, C: input.C, hw: input.hw)
        }
    }
}

/// For each image: X = A^T (hw, C), centred by its column means; v = the first
/// right singular vector of X (the top eigenvector of X^T X, by power
/// iteration in Double); the map is X v. The sign of v is arbitrary in an SVD
/// (pytorch-grad-cam keeps whatever LAPACK returns); here it is fixed so the
/// map correlates positively with the channel-summed activation, so the
/// highlighted region is the one the network responds to, run after run.
func firstComponentProjection(_ a: UnsafePointer<Float>, N: Int, C: Int, hw: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * hw)
    for n in 0..<N {
        var X = [Double](repeating: 0, count: hw * C)  // row p, column c
        for c in 0..<C {
            var mean = 0.0
            for p in 0..<hw { mean += Double(a[(n * C + c) * hw + p]) }
            mean /= Double(hw)
            for p in 0..<hw { X[p * C + c] = Double(a[(n * C + c) * hw + p]) - mean }
        }
        // Gram matrix of rows (hw x hw, small) -> top eigenvector u; v ~ X^T u.
        var K = [Double](repeating: 0, count: hw * hw)
        for i in 0..<hw { for j in i..<hw {
            var s = 0.0
            for c in 0..<C { s += X[i * C + c] * X[j * C + c] }
            K[i * hw + j] = s; K[j * hw + i] = s
        } }
        var u = (0..<hw).map { 1.0 + 0.01 * Double($0 % 7) }
        for _ in 0..<500 {
            var nu = [Double](repeating: 0, count: hw)
            for i in 0..<hw { var s = 0.0; for j in 0..<hw { s += K[i * hw + j] * u[j] }; nu[i] = s }
            let norm = nu.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm == 0 { break }
            let next = nu.map { $0 / norm }
            let delta = zip(next, u).reduce(0) { $0 + abs($1.0 - $1.1) }
            u = next
            if delta < 1e-12 { break }
        }
        // X v with v = X^T u / |X^T u| equals K u / |X^T u| = sigma * u: the projection.
        var v = [Double](repeating: 0, count: C)
        for p in 0..<hw { for c in 0..<C { v[c] += X[p * C + c] * u[p] } }
        let vn = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        var proj = [Double](repeating: 0, count: hw)
        if vn > 0 {
            for p in 0..<hw { var s = 0.0; for c in 0..<C { s += X[p * C + c] * v[c] }; proj[p] = s / vn }
        }
        // Sign: positive correlation with the channel-summed activation.
        var corr = 0.0
        for p in 0..<hw {
            var s = 0.0
            for c in 0..<C { s += Double(a[(n * C + c) * hw + p]) }
            corr += s * proj[p]
        }
        let sign = corr < 0 ? -1.0 : 1.0
        for p in 0..<hw { out[n * hw + p] = Float(sign * proj[p]) }
    }
    return out
}

/// Score-CAM (Wang et al. 2020, eq. 4-6): each channel, upsampled (bilinear,
/// align_corners) and min-max normalised, masks the input; w = softmax over
/// channels of the masked inputs' target logits. Masked forwards are batched.
public struct ScoreCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { false }
    public func channelWeights(_ input: CAMInput) -> [Float] {
        let ctx = input.context!, x = ctx.input
        let N = input.N, C = input.C, h = input.A.shape[2], w = input.A.shape[3]
        let IC = x.shape[1], H = x.shape[2], W = x.shape[3]
        var weights = [Float](repeating: 0, count: N * C)
        let mask = UnsafeMutablePointer<Float>.allocate(capacity: H * W)
        defer { mask.deallocate() }
        for n in 0..<N {
            var scores: [Float] = []
            var c0 = 0
            while c0 < C {
                let b = min(ctx.batchSize, C - c0)
                let batch = Tensor([b, IC, H, W])
                for k in 0..<b {
                    resizeBilinearAlignCorners(input.A.data + (n * C + c0 + k) * h * w, h: h, w: w, H: H, W: W, into: mask)
                    var lo = Float.infinity, hi = -Float.infinity
                    for i in 0..<(H * W) { lo = min(lo, mask[i]); hi = max(hi, mask[i]) }
                    let s = 1 / (hi - lo + 1e-8)
                    for ic in 0..<IC {
                        let src = x.data + (n * IC + ic) * H * W, dst = batch.data + (k * IC + ic) * H * W
                        for i in 0..<(H * W) { dst[i] = src[i] * (mask[i] - lo) * s }
                    }
                }
                scores += ctx.scores(of: batch, target: input.targets[n])
                c0 += b
            }
            let m = scores.max() ?? 0
            let e = scores.map { Foundation.exp(Double($0 - m)) }
            let sum = e.reduce(0, +)
            for c in 0..<C { weights[n * C + c] = Float(e[c] / sum) }
        }
        return weights
    }
}

/// Ablation-CAM (Desai & Ramaswamy 2020, eq. 2): w_c = (y - y_c) / y, where y_c
/// is the target logit with channel c of the layer ablated (set to 0, or far
/// below the minimum when activations can be negative, as pytorch-grad-cam).
/// Only the part of the network after the layer is re-run, in batches.
public struct AblationCAM: CAMMethod {
    public init() {}
    public var needsGradients: Bool { false }
    public func channelWeights(_ input: CAMInput) -> [Float] {
        let ctx = input.context!
        let N = input.N, C = input.C, hw = input.hw
        let A = input.A
        var minimum = Float.infinity
        for i in 0..<A.count { minimum = min(minimum, A[i]) }
        let ablated: Float = minimum == 0 ? 0 : minimum - 1e7
        var weights = [Float](repeating: 0, count: N * C)
        for n in 0..<N {
            let original = ctx.scoresFromLayer(single(A, n), target: input.targets[n])[0]
            var c0 = 0
            while c0 < C {
                let b = min(ctx.batchSize, C - c0)
                let batch = Tensor([b, C, A.shape[2], A.shape[3]])
                for k in 0..<b {
                    (batch.data + k * C * hw).update(from: A.data + n * C * hw, count: C * hw)
                    (batch.data + (k * C + c0 + k) * hw).update(repeating: ablated, count: hw)
                }
                let s = ctx.scoresFromLayer(batch, target: input.targets[n])
                for k in 0..<b { weights[n * C + c0 + k] = (original - s[k]) / original }
                c0 += b
            }
        }
        return weights
    }

    func single(_ A: Tensor, _ n: Int) -> Tensor {
        let per = A.count / A.shape[0]
        let t = Tensor([1] + Array(A.shape.dropFirst()))
        t.data.update(from: A.data + n * per, count: per)
        return t
    }
}
