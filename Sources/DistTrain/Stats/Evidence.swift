import Foundation

/// How sure one model's test figures are: stratified-bootstrap intervals of
/// every figure, the exact interval of accuracy, and calibration (ECE on test
/// before and after a temperature fitted on validation).
public struct RunEvidence: Codable, Sendable {
    public var resamples: Int
    public var seed: UInt64
    /// Test figures and their 95 % stratified-bootstrap intervals, by `BinaryFigures.names`.
    public var figures: BinaryFigures
    public var intervals: [String: Interval]
    /// Clopper-Pearson interval of test accuracy.
    public var accuracyExact: Interval
    public var ece: Double
    /// Fitted on validation (1 when there is no validation split).
    public var temperature: Double
    public var eceScaled: Double
    public var reliability: [Calibration.Bin]

    public static let defaultResamples = 2000

    public init(testLabels: [Int], testScores: [Double], valLabels: [Int], valScores: [Double],
                resamples: Int = defaultResamples, seed: UInt64 = 0) {
        self.resamples = resamples; self.seed = seed
        figures = BinaryFigures(labels: testLabels, scores: testScores)
        intervals = Stats.bootstrapIntervals(labels: testLabels, scores: testScores, resamples: resamples, seed: seed)
        let right = zip(testLabels, testScores).filter { Classifier.decide(score: $1) == $0 }.count
        accuracyExact = Stats.clopperPearson(successes: right, trials: max(testLabels.count, 1))
        ece = Calibration.expectedCalibrationError(labels: testLabels, scores: testScores)
        let t = valLabels.isEmpty ? 1 : Calibration.fitTemperature(labels: valLabels, scores: valScores)
        temperature = t
        let scaled = testScores.map { Calibration.scaled($0, temperature: t) }
        eceScaled = Calibration.expectedCalibrationError(labels: testLabels, scores: scaled)
        reliability = Calibration.bins(labels: testLabels, scores: testScores)
    }
}

/// Two models on the same test images: is B better than A?
public struct PairedComparison: Codable, Sendable {
    public var nameA: String, nameB: String
    public var images: Int
    /// Images only A gets right, only B gets right.
    public var onlyA: Int, onlyB: Int
    public var mcnemarP: Double
    public var accuracyDifference: Double, accuracyInterval: Interval
    public var aucDifference: Double, aucInterval: Interval

    public init(nameA: String, nameB: String, labels: [Int], scoresA: [Double], scoresB: [Double],
                resamples: Int = RunEvidence.defaultResamples, seed: UInt64 = 0) {
        self.nameA = nameA; self.nameB = nameB; images = labels.count
        var a = 0, b = 0
        for (y, (pa, pb)) in zip(labels, zip(scoresA, scoresB)) {
            let ra = Classifier.decide(score: pa) == y, rb = Classifier.decide(score: pb) == y
            if ra && !rb { a += 1 }
            if rb && !ra { b += 1 }
        }
        onlyA = a; onlyB = b
        mcnemarP = Stats.mcnemarExact(b: a, c: b)
        (accuracyDifference, accuracyInterval) = Stats.pairedDifference("accuracy", labels: labels, scoresA: scoresA, scoresB: scoresB,
                                                                        resamples: resamples, seed: seed)
        (aucDifference, aucInterval) = Stats.pairedDifference("auc", labels: labels, scoresA: scoresA, scoresB: scoresB,
                                                              resamples: resamples, seed: seed)
    }

    /// The answer in words, with the numbers it rests on: "better" only when
    /// the accuracy interval excludes 0 and McNemar's p is below 0.05.
    public var sentence: String {
        let head: String
        if accuracyInterval.lower > 0 && mcnemarP < 0.05 {
            head = "\(nameB) is better than \(nameA)"
        } else if accuracyInterval.upper < 0 && mcnemarP < 0.05 {
            head = "\(nameB) is worse than \(nameA)"
        } else {
            head = "no difference between \(nameB) and \(nameA) that this test set can show"
        }
        return head + String(format: ": accuracy %+.2f points (95 %% paired-bootstrap interval %+.2f to %+.2f), "
                             + "ROC AUC %+.4f (%+.4f to %+.4f); McNemar exact p = %.3g on %d discordant of %d images ",
                             100 * accuracyDifference, 100 * accuracyInterval.lower, 100 * accuracyInterval.upper,
                             aucDifference, aucInterval.lower, aucInterval.upper, mcnemarP, onlyA + onlyB, images)
            + "(\(onlyB) right only by \(nameB), \(onlyA) only by \(nameA))."
    }
}

/// The test figures on the images with no near-duplicate in train (`Audit`),
/// beside the 1-nearest-neighbour baseline a network has to beat.
public struct CleanSubset: Codable, Sendable {
    public var threshold: Double
    /// Test images without a train neighbour at the threshold, of all test images.
    public var images: Int, testImages: Int
    public var figures: BinaryFigures
    public var intervals: [String: Interval]
    public var accuracyExact: Interval
    /// Accuracy of the nearest train image's label, on all test images and on the clean ones.
    public var nearestNeighbourAccuracy: Double, nearestNeighbourCleanAccuracy: Double

    public init(audit: Audit.Result, labels: [Int], scores: [Double], nearestLabels: [Int], seed: UInt64 = 0) {
        threshold = audit.threshold
        let clean = audit.cleanPositions(.test)
        images = clean.count; testImages = labels.count
        let y = clean.map { labels[$0] }, p = clean.map { scores[$0] }
        figures = BinaryFigures(labels: y, scores: p)
        intervals = y.isEmpty ? [:] : Stats.bootstrapIntervals(labels: y, scores: p, seed: seed)
        let right = zip(y, p).filter { Classifier.decide(score: $1) == $0 }.count
        accuracyExact = y.isEmpty ? Interval(lower: .nan, upper: .nan, level: 0.95)
            : Stats.clopperPearson(successes: right, trials: y.count)
        nearestNeighbourAccuracy = audit.nearestNeighbourAccuracy
        let nnRight = clean.filter { nearestLabels[$0] == labels[$0] }.count
        nearestNeighbourCleanAccuracy = clean.isEmpty ? .nan : Double(nnRight) / Double(clean.count)
    }
}
