import Foundation

/// What `eval RUN --data SET` measured: RUN/external/NAME/summary.json.
public struct ExternalSummary: Codable {
    public var run: String, checkpoint: String
    public var name: String, set: String, form: ExternalSet.Form
    public var imageSize: Int, channels: Int
    /// The HU window DICOM/NIfTI slices were made with (nil for PNG/JPEG sets).
    public var window: String?
    public var classNames: [String]
    /// Images per class, in the run's class order.
    public var classCounts: [Int]
    public var metrics: SplitMetrics
    /// Intervals and calibration, when both classes are present.
    public var evidence: RunEvidence?
    /// What a set of one class allows, when only one is present.
    public var oneClass: OneClassFigure?
    /// Expected calibration error (15 bins) and the reliability diagram's bins, for any set.
    public var ece: Double
    public var reliability: [Calibration.Bin]
    /// Every CAM method and the input gradient against the set's lesion masks, where it has them.
    public var localization: [Localization]?
    public var camLayer: String
    /// What the figures can and cannot say, in words (the page and stdout print it).
    public var note: String
    public var seconds: Double
}

/// A set of one class: sensitivity (all positive) or specificity (all
/// negative), the share of its images the run calls their class, with the
/// Clopper-Pearson interval. Nothing else that needs both classes (ROC AUC,
/// precision, the other rate) can be measured.
public struct OneClassFigure: Codable, Sendable, Equatable {
    public var className: String
    /// "sensitivity" or "specificity".
    public var figure: String
    public var value: Double
    public var interval: Interval
    public var right: Int, images: Int

    /// nil unless `labels` hold exactly one class of a two-class run (class 1 positive).
    public init?(labels: [Int], scores: [Double], classNames: [String]) {
        guard let k = labels.first, labels.allSatisfy({ $0 == k }) else { return nil }
        className = classNames.indices.contains(k) ? classNames[k] : "\(k)"
        figure = k == 1 ? "sensitivity" : "specificity"
        right = scores.filter { Classifier.decide(score: $0) == k }.count
        images = labels.count
        value = Double(right) / Double(images)
        interval = Stats.clopperPearson(successes: right, trials: images)
    }

    /// The sentence the page, summary.json and stdout give.
    public var sentence: String {
        String(format: "one class only (%@, %d images): %@ %.4f (95 %% Clopper-Pearson interval %.4f to %.4f, %d of %d called %@); ",
               className, images, figure, value, interval.lower, interval.upper, right, images, className)
            + "\(figure == "sensitivity" ? "specificity" : "sensitivity"), precision and ROC AUC need both classes and are not measured"
    }
}
