/// Training state beyond the tensors, listed once: checkpoints store it as
/// `state/<field>` (HDF5File.writeFields), ranks receive it as one encoded block.
public struct TrainState: Codable, Sendable, Equatable {
    /// Last completed epoch (1-based); 0 = none.
    public var epoch = 0
    /// Global optimizer steps taken.
    public var step = 0
    /// Best epoch by validation loss, then accuracy.
    public var bestEpoch = 0
    public var bestValLoss = Double.infinity
    public var bestValAccuracy = 0.0
    public init() {}

    /// What a state read from a file must satisfy.
    public func problems() -> [String] {
        var p: [String] = []
        if epoch < 0 || step < 0 { p.append("epoch \(epoch) and step \(step) must be >= 0") }
        if bestEpoch < 0 || bestEpoch > epoch { p.append("best epoch \(bestEpoch) must be in 0...\(epoch)") }
        if bestValLoss.isNaN || bestValAccuracy.isNaN { p.append("the best validation figures are NaN") }
        return p
    }
}
