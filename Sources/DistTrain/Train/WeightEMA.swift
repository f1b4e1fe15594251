import Net

/// An exponential moving average of the model (`--ema DECAY`), as torchvision's
/// reference ExponentialMovingAverage (AveragedModel with use_buffers=True):
/// after every optimizer step ema = decay * ema + (1 - decay) * current, in
/// float32 like torch, for the parameters and the BatchNorm running statistics
/// alike (num_batches_tracked stays the model's). Averaging the statistics
/// matters: the live ones describe the live weights, and at a high learning
/// rate the averaged weights with them scored 72-95 % on validation from one
/// epoch to the next (docs/results/r2, scratch seed 0). Every rank holds the
/// same EMA, since every rank takes the same steps.
public final class WeightEMA {
    public let decay: Float
    /// The averaged parameters (as ParameterStore.values), then the averaged
    /// BatchNorm buffers (as ParameterStore.buffers).
    public private(set) var values: [Float]
    private let parameterCount: Int

    /// Starts from the current model (the initialisation or the transfer source).
    public init(decay: Double, store: ParameterStore) {
        self.decay = Float(decay)
        parameterCount = store.parameterCount
        values = []
        reset(to: store)
    }

    /// Runs `body` on each (average, model) pair of memory: parameters, then buffers.
    private func pairs(_ store: ParameterStore,
                       _ body: (UnsafeMutableBufferPointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
        let p = parameterCount
        values.withUnsafeMutableBufferPointer { e in
            body(UnsafeMutableBufferPointer(rebasing: e[0..<p]), store.values)
            body(UnsafeMutableBufferPointer(rebasing: e[p...]), store.buffers)
        }
    }

    public func update(from store: ParameterStore) {
        let d = decay
        pairs(store) { e, m in
            for i in 0..<e.count { e[i] = d * e[i] + (1 - d) * m[i] }
        }
    }

    /// Exchanges the EMA and the model's weights and statistics (call twice to restore).
    public func swap(with store: ParameterStore) {
        pairs(store) { e, m in
            for i in 0..<e.count { let t = e[i]; e[i] = m[i]; m[i] = t }
        }
    }

    /// `body` with the averaged model in place, the training state back afterwards.
    public func withAveragedWeights<T>(in store: ParameterStore, _ body: () throws -> T) rethrows -> T {
        swap(with: store)
        defer { swap(with: store) }
        return try body()
    }

    /// Restarts the average at the model's current state (a new run; resume before the training state loads).
    public func reset(to store: ParameterStore) {
        precondition(store.parameterCount == parameterCount)
        values = Array(UnsafeBufferPointer(start: store.values, count: store.parameterCount))
            + Array(UnsafeBufferPointer(start: store.buffers, count: store.bufferCount))
    }

    /// The average of one float entry (parameter or buffer).
    public func values(of e: StateEntry) -> [Float] {
        precondition(e.kind != .counter)
        let base = e.kind == .parameter ? e.offset : parameterCount + e.offset
        return Array(values[base..<(base + e.count)])
    }

    /// The averaged BatchNorm statistics, to be made the mean over ranks where the live ones are
    /// (each rank averages its own; the mean of the ranks' averages is the average of their mean).
    public func withStatistics(_ body: (UnsafeMutablePointer<Float>, Int) -> Void) {
        let p = parameterCount
        values.withUnsafeMutableBufferPointer { body($0.baseAddress! + p, $0.count - p) }
    }

    /// Replaces the average (broadcast).
    public func load(_ v: [Float]) {
        precondition(v.count == values.count)
        values = v
    }
}
