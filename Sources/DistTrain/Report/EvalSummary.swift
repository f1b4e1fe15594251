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

    public init(checkpoint: String, val: SplitMetrics, test: SplitMetrics) {
        self.checkpoint = checkpoint; self.val = val; self.test = test
    }
}
