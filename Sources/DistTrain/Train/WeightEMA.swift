import Net

/// An exponential moving average of the parameters (`--ema DECAY`), as
/// torchvision's reference ExponentialMovingAverage (AveragedModel without
/// use_buffers): after every optimizer step ema = decay * ema + (1 - decay) *
/// weights, in float32 like torch; BatchNorm buffers are not averaged, the
/// model's own are used with the EMA weights ("copied"). Every rank holds the
/// same EMA, since every rank takes the same steps.
public final class WeightEMA {
    public let decay: Float
    /// The averaged parameters, laid out as ParameterStore.values.
    public private(set) var values: [Float]

    /// Starts from the current weights (the initialisation or the transfer source).
    public init(decay: Double, store: ParameterStore) {
        self.decay = Float(decay)
        values = []
        reset(to: store)
    }

    public func update(from store: ParameterStore) {
        let d = decay, p = store.values
        values.withUnsafeMutableBufferPointer { e in
            for i in 0..<e.count { e[i] = d * e[i] + (1 - d) * p[i] }
        }
    }

    /// Exchanges the EMA and the model's weights (call twice to restore).
    public func swap(with store: ParameterStore) {
        let p = store.values
        values.withUnsafeMutableBufferPointer { e in
            for i in 0..<e.count { let t = e[i]; e[i] = p[i]; p[i] = t }
        }
    }

    /// `body` with the EMA weights in the model, the training weights back afterwards.
    public func withAveragedWeights<T>(in store: ParameterStore, _ body: () throws -> T) rethrows -> T {
        swap(with: store)
        defer { swap(with: store) }
        return try body()
    }

    /// Restarts the average at the model's current weights (a new run; resume before the training weights load).
    public func reset(to store: ParameterStore) {
        values = Array(UnsafeBufferPointer(start: store.values, count: store.parameterCount))
    }

    /// Replaces the average (broadcast).
    public func load(_ v: [Float]) {
        precondition(v.count == values.count)
        values = v
    }
}
