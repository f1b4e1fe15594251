import Foundation

// Softmax cross-entropy, mean over the batch, with PyTorch's label smoothing:
//   q = (1 - eps) * onehot(y) + eps / K,   loss = -(1/N) sum_n sum_k q_k log softmax(z_n)_k
// dL/dz = (softmax(z) - q) / N. Logits (N, K), labels in 0..<K.

public struct CrossEntropy {
    public var labelSmoothing: Float
    public init(labelSmoothing: Float = 0) { self.labelSmoothing = labelSmoothing }

    /// Returns the mean loss and writes dL/dlogits into `dlogits` (resized).
    @discardableResult
    public func forwardBackward(logits: Tensor, labels: [Int], dlogits: Tensor?) -> Float {
        let N = logits.shape[0], K = logits.shape[1]
        precondition(labels.count == N, "\(labels.count) labels for \(N) logits")
        dlogits?.resize(logits.shape)
        let eps = Double(labelSmoothing)
        var total = 0.0
        for n in 0..<N {
            let z = logits.data + n * K
            var mx = -Double.infinity
            for k in 0..<K { mx = max(mx, Double(z[k])) }
            var se = 0.0
            for k in 0..<K { se += Foundation.exp(Double(z[k]) - mx) }
            let lse = mx + Foundation.log(se)
            let y = labels[n]
            precondition(y >= 0 && y < K, "label \(y) out of range 0..<\(K)")
            var l = 0.0
            for k in 0..<K {
                let q = (k == y ? 1 - eps : 0) + eps / Double(K)
                l -= q * (Double(z[k]) - lse)
                if let d = dlogits {
                    d.data[n * K + k] = Float((Foundation.exp(Double(z[k]) - lse) - q) / Double(N))
                }
            }
            total += l
        }
        return Float(total / Double(N))
    }
}

/// Row-wise softmax of (N, K) logits, in Double for stability.
public func softmax(_ logits: Tensor) -> [[Float]] {
    let N = logits.shape[0], K = logits.shape[1]
    return (0..<N).map { n in
        let z = (0..<K).map { Double(logits.data[n * K + $0]) }
        let m = z.max() ?? 0
        let e = z.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { Float($0 / s) }
    }
}
