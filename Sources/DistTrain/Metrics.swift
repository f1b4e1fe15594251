import Foundation

/// Classification metrics of one split. For two classes, class 1 is the
/// positive one (COVID): sensitivity = recall = TP/(TP+FN), specificity =
/// TN/(TN+FP), precision = TP/(TP+FP), F1, and ROC AUC from the scores
/// p(class 1) (Mann-Whitney, ties counted half).
public struct SplitMetrics: Codable, Sendable, Equatable {
    public var loss = Double.nan, accuracy = Double.nan
    public var sensitivity = Double.nan, specificity = Double.nan, precision = Double.nan, f1 = Double.nan, auc = Double.nan
    public var count = 0
    public var confusion: [[Int]] = []

    public init() {}

    public init(lossSum: Double, labels: [Int], predictions: [Int], scores: [Double], classes: Int) {
        count = labels.count
        guard count > 0 else { return }
        loss = lossSum / Double(count)
        var cm = Array(repeating: Array(repeating: 0, count: classes), count: classes)
        for (y, p) in zip(labels, predictions) { cm[y][p] += 1 }
        confusion = cm
        accuracy = Double(zip(labels, predictions).filter { $0 == $1 }.count) / Double(count)
        guard classes == 2 else { return }
        let tp = Double(cm[1][1]), tn = Double(cm[0][0]), fp = Double(cm[0][1]), fn = Double(cm[1][0])
        sensitivity = tp + fn > 0 ? tp / (tp + fn) : .nan
        specificity = tn + fp > 0 ? tn / (tn + fp) : .nan
        precision = tp + fp > 0 ? tp / (tp + fp) : .nan
        f1 = precision.isNaN || sensitivity.isNaN || precision + sensitivity == 0 ? .nan
            : 2 * precision * sensitivity / (precision + sensitivity)
        auc = SplitMetrics.rocAUC(labels: labels, scores: scores)
    }

    /// P(score of a random positive > score of a random negative), ties 1/2.
    public static func rocAUC(labels: [Int], scores: [Double]) -> Double {
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var ranks = [Double](repeating: 0, count: scores.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let r = Double(i + j) / 2 + 1
            for k in i...j { ranks[order[k]] = r }
            i = j + 1
        }
        let pos = labels.filter { $0 == 1 }.count, neg = labels.count - pos
        guard pos > 0 && neg > 0 else { return .nan }
        let sumPos = zip(labels, ranks).filter { $0.0 == 1 }.reduce(0) { $0 + $1.1 }
        return (sumPos - Double(pos * (pos + 1)) / 2) / Double(pos * neg)
    }
}

/// One row of metrics.csv / metrics.h5.
public struct EpochRow: Codable, Sendable {
    public var epoch: Int
    public var trainLoss: Double, trainAccuracy: Double
    public var val: SplitMetrics, test: SplitMetrics
    public var lr: Double, seconds: Double, imagesPerSecond: Double
    /// Peak resident set size of the largest rank so far, MiB (NaN in runs from before it was logged).
    public var peakRSSMiB: Double

    static let columns = ["epoch", "train_loss", "train_accuracy",
                          "val_loss", "val_accuracy", "val_sensitivity", "val_specificity", "val_precision", "val_f1", "val_auc",
                          "test_loss", "test_accuracy", "test_sensitivity", "test_specificity", "test_precision", "test_f1", "test_auc",
                          "lr", "seconds", "images_per_second", "peak_rss_mib"]

    var values: [Double] {
        func split(_ m: SplitMetrics) -> [Double] { [m.loss, m.accuracy, m.sensitivity, m.specificity, m.precision, m.f1, m.auc] }
        return [Double(epoch), trainLoss, trainAccuracy] + split(val) + split(test) + [lr, seconds, imagesPerSecond, peakRSSMiB]
    }

    init(epoch: Int, trainLoss: Double, trainAccuracy: Double, val: SplitMetrics, test: SplitMetrics,
         lr: Double, seconds: Double, imagesPerSecond: Double, peakRSSMiB: Double) {
        self.epoch = epoch; self.trainLoss = trainLoss; self.trainAccuracy = trainAccuracy
        self.val = val; self.test = test; self.lr = lr; self.seconds = seconds; self.imagesPerSecond = imagesPerSecond
        self.peakRSSMiB = peakRSSMiB
    }

    init(values v: [Double]) {
        func split(_ o: Int) -> SplitMetrics {
            var m = SplitMetrics()
            (m.loss, m.accuracy, m.sensitivity, m.specificity, m.precision, m.f1, m.auc) = (v[o], v[o + 1], v[o + 2], v[o + 3], v[o + 4], v[o + 5], v[o + 6])
            return m
        }
        self.init(epoch: Int(v[0]), trainLoss: v[1], trainAccuracy: v[2], val: split(3), test: split(10),
                  lr: v[17], seconds: v[18], imagesPerSecond: v[19], peakRSSMiB: v.count > 20 ? v[20] : .nan)
    }
}

/// metrics.csv and metrics.h5 of a run, rewritten whole each epoch (tmp + rename).
public struct MetricsLog {
    public var rows: [EpochRow] = []
    let dir: String

    public init(dir: String) { self.dir = dir }

    /// Rows of an earlier invocation, up to and including `epoch`.
    public static func load(dir: String, upTo epoch: Int) -> MetricsLog {
        var log = MetricsLog(dir: dir)
        guard let f = try? HDF5File(dir + "/metrics.h5"), let (shape, v) = try? f.readDoubles("metrics"), shape.count == 2 else { return log }
        let width = shape[1]
        // Runs from before peak_rss_mib was logged have one column less.
        guard width == EpochRow.columns.count || width == EpochRow.columns.count - 1 else { return log }
        for r in 0..<shape[0] {
            let row = EpochRow(values: Array(v[(r * width)..<((r + 1) * width)]))
            if row.epoch <= epoch { log.rows.append(row) }
        }
        return log
    }

    public mutating func append(_ row: EpochRow) throws {
        rows.append(row)
        var csv = EpochRow.columns.joined(separator: ",") + "\n"
        for r in rows {
            csv += r.values.enumerated().map { i, x in i == 0 ? String(Int(x)) : (x.isNaN ? "" : String(format: "%.6g", x)) }
                .joined(separator: ",") + "\n"
        }
        try Data(csv.utf8).write(to: URL(fileURLWithPath: dir + "/metrics.csv.tmp"))
        try durableRename(dir + "/metrics.csv.tmp", dir + "/metrics.csv")
        let tmp = dir + "/metrics.h5.tmp"
        do {
            let f = try HDF5File(tmp, .create)
            try f.write("metrics", shape: [rows.count, EpochRow.columns.count], doubles: rows.flatMap(\.values))
            try f.writeStrings("columns", EpochRow.columns)
            // One dataset per column too, so pandas/h5py users can read a curve by name.
            for (i, name) in EpochRow.columns.enumerated() { try f.write("columns_by_name/" + name, doubles: rows.map { $0.values[i] }) }
        }
        try durableRename(tmp, dir + "/metrics.h5")
    }
}
