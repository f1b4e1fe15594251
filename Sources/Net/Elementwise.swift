// Residual add with the ReLU that follows it in both ResNet blocks:
// y = max(a + b, 0); backward: d = dy where y > 0, else 0 (the same d flows
// to both branches).

public final class AddReLU {
    public let output = Tensor()
    /// dL/da = dL/db.
    public let dinput = Tensor()
    /// The threads its loops split over (its engine's).
    let parallel: Parallel
    public init(engine: Engine = Engine()) { parallel = engine.parallel }

    @discardableResult
    public func forward(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape && a.channelsLast == b.channelsLast, "residual add of \(a.shape) and \(b.shape) (or of two layouts)")
        output.resize(a.shape, channelsLast: a.channelsLast)
        let ap = a.data, bp = b.data, yp = output.data
        parallel.chunks(a.count, grain: 1 << 16) { lo, hi in
            for i in lo..<hi { yp[i] = max(ap[i] + bp[i], 0) }
        }
        return output
    }

    public func backward(_ dy: Tensor) {
        dinput.resize(output.shape, channelsLast: output.channelsLast)
        let yp = output.data, dyp = dy.data, dp = dinput.data
        parallel.chunks(output.count, grain: 1 << 16) { lo, hi in
            for i in lo..<hi { dp[i] = yp[i] > 0 ? dyp[i] : 0 }
        }
    }
}

/// out += a, elementwise over `parallel` (gradients meeting where branches merge).
func addInPlace(_ out: Tensor, _ a: Tensor, _ parallel: Parallel) {
    precondition(out.count == a.count && out.channelsLast == a.channelsLast)
    let o = out.data, s = a.data
    parallel.chunks(out.count, grain: 1 << 16) { lo, hi in
        for i in lo..<hi { o[i] += s[i] }
    }
}
