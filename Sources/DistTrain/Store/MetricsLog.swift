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

    /// Epochs are whole numbers in 0...maxEpoch; `init(values:)` needs one (Int() of NaN or 1e300 traps).
    static let maxEpoch = 1_000_000_000
    static func isEpoch(_ v: Double) -> Bool { v.isFinite && v >= 0 && v <= Double(maxEpoch) && v.rounded() == v }

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
    /// (results copied into docs/results). Columns are found by header name
    /// (RFC 4180, CSV.parse); an empty cell or a missing column is NaN. Empty
    /// when neither file exists; a metrics.csv that does not read is an error
    /// naming the file and line (a cell that is not a number, a row of the
    /// wrong width, an epoch that is not a whole number), never a curve of
    /// made-up points.
    public static func rows(ofRun dir: String) throws -> [EpochRow] {
        let fromH5 = load(dir: dir, upTo: Int.max).rows
        let path = dir + "/metrics.csv"
        guard fromH5.isEmpty, FileManager.default.fileExists(atPath: path) else { return fromH5 }
        let records = try CSV.read(path)
        guard let header = records.first else { return [] }
        let at = EpochRow.columns.map { header.fields.firstIndex(of: $0) }
        guard let epochColumn = at[0] else { throw RuntimeError("\(path) line \(header.line): the header has no column 'epoch'") }
        return try records.dropFirst().map { r in
            guard r.fields.count == header.fields.count else {
                throw RuntimeError("\(path) line \(r.line): \(r.fields.count) fields, the header has \(header.fields.count)")
            }
            let values = try zip(EpochRow.columns, at).map { name, i -> Double in
                guard let i, !r.fields[i].isEmpty else { return .nan }
                guard let v = Double(r.fields[i]) else {
                    throw RuntimeError("\(path) line \(r.line): \(name) '\(r.fields[i])' is not a number")
                }
                return v
            }
            guard EpochRow.isEpoch(values[0]) else {
                throw RuntimeError("\(path) line \(r.line): epoch '\(r.fields[epochColumn])' is not a whole number "
                                   + "in 0...\(EpochRow.maxEpoch)")
            }
            return EpochRow(values: values)
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
        // A file whose epochs are not whole numbers is not one this program wrote: read as no rows (as a wrong width is).
        guard (0..<shape[0]).allSatisfy({ EpochRow.isEpoch(v[$0 * width]) }) else { return log }
        for r in 0..<shape[0] {
            let row = EpochRow(values: Array(v[(r * width)..<((r + 1) * width)]))
            if row.epoch <= epoch { log.rows.append(row) }
        }
        return log
    }

    public mutating func append(_ row: EpochRow) throws {
        rows.append(row)
        var csv = CSV.row(EpochRow.columns)
        for r in rows {
            csv += CSV.row(r.values.enumerated().map { i, x in i == 0 ? String(r.epoch) : (x.isNaN ? "" : String(format: "%.6g", x)) })
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
