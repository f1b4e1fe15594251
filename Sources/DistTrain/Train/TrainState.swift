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
}
