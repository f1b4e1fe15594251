import Foundation

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
            (m.loss, m.accuracy, m.sensitivity, m.specificity) = (v[o], v[o + 1], v[o + 2], v[o + 3])
            (m.precision, m.f1, m.auc) = (v[o + 4], v[o + 5], v[o + 6])
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

    /// Every row of a run: metrics.h5, or metrics.csv where only that was kept
    /// (results copied into docs/results). Columns are found by header name;
    /// an empty cell is NaN. Empty when neither file reads.
    public static func rows(ofRun dir: String) -> [EpochRow] {
        let fromH5 = load(dir: dir, upTo: Int.max).rows
        guard fromH5.isEmpty, let text = try? String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8) else { return fromH5 }
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else { return [] }
        let at = EpochRow.columns.map { header.firstIndex(of: $0) }
        guard at[0] != nil else { return [] }
        return lines.dropFirst().map { cells in
            EpochRow(values: at.map { i in i.flatMap { $0 < cells.count ? Double(cells[$0]) : nil } ?? .nan })
        }
    }

    /// Rows of an earlier invocation, up to and including `epoch`.
    public static func load(dir: String, upTo epoch: Int) -> MetricsLog {
        var log = MetricsLog(dir: dir)
        guard let f = try? HDF5File(dir + "/metrics.h5"), let (shape, v) = try? f.readDoubles("metrics"), shape.count == 2 else {
            return log
        }
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
        try durableWrite(dir + "/metrics.csv", data: Data(csv.utf8))
        try durableHDF5(dir + "/metrics.h5") { f in
            try f.write("metrics", shape: [rows.count, EpochRow.columns.count], doubles: rows.flatMap(\.values))
            try f.writeStrings("columns", EpochRow.columns)
            // One dataset per column too, so pandas/h5py users can read a curve by name.
            for (i, name) in EpochRow.columns.enumerated() { try f.write("columns_by_name/" + name, doubles: rows.map { $0.values[i] }) }
        }
    }
}
