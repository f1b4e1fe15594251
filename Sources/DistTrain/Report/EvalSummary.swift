/// What `eval` measured of one checkpoint: report/summary.json, and the row
/// `report` compares.
public struct EvalSummary: Codable {
    public var checkpoint: String
    public var val: SplitMetrics
    public var test: SplitMetrics
    public var run: String?, method: String?, arch: String?
    public var imageSize: Int?, bestEpoch: Int?, epochs: Int?
    public var wallSeconds: Double?, imagesPerSecond: Double?
    /// Peak RSS of the largest rank during training, MiB.
    public var peakRSSMiB: Double?
    public var classNames: [String]?
    public var localization: [Localization]?
    public var camLayer: String?
    /// Intervals and calibration of the test figures (two-class data sets).
    public var evidence: RunEvidence?
    /// Test figures on the images without a near-duplicate in train, and the 1-NN baseline.
    public var clean: CleanSubset?
    /// The same checkpoint with test-time augmentation (`eval --tta flip`), beside the plain figures.
    public var tta: AugmentedEvaluation?
    /// Where the maps lie against each slice's lung mask, and the test split with the outside of the lungs occluded.
    public var lungs: LungReport?

    public init(checkpoint: String, val: SplitMetrics, test: SplitMetrics) {
        self.checkpoint = checkpoint; self.val = val; self.test = test
    }
}

/// Figures of a checkpoint under test-time augmentation.
public struct AugmentedEvaluation: Codable, Sendable {
    public var method: TestTimeAugmentation
    public var val: SplitMetrics, test: SplitMetrics
    public var evidence: RunEvidence?
}
