import Foundation

/// `disttrain report --folds RUN...`: patient-level k-fold cross-validation
/// (launch/cv), each run one fold of one method, evaluated with `disttrain eval`.
///
/// - Per fold: the test (held-out fold) figures, slice- and patient-level.
/// - Per method: mean +- sd over folds, and the pooled out-of-fold predictions
///   (every image once, predicted by the model that never saw its patient)
///   with 95 % intervals from resampling patients, not slices.
/// - Patient level: a patient's probability is the mean of its slices'.
/// - Transfer against scratch on the pooled predictions: the paired
///   patient-bootstrap interval of the difference (both on the same draws) and
///   McNemar's exact test on patients (slices of a patient are not independent,
///   so a slice-level McNemar would overstate the evidence; it is shown, marked so).
struct CrossValidation {
    /// One fold's run: its test predictions with each image's group (patient).
    struct Fold {
        var run: String, method: String
        var files: [String], labels: [Int], scores: [Double], groups: [String]
    }

    struct Figures: Codable {
        var value: BinaryFigures
        var intervals: [String: Interval]
        var images: Int
    }

    struct MethodSummary: Codable {
        var method: String
        var folds: Int
        var slice: Figures, patient: Figures
        var patients: Int
        /// Mean and sd over folds of slice accuracy, AUC, and patient-level accuracy.
        var foldAccuracy: [Double], foldAUC: [Double], foldPatientAccuracy: [Double]
        /// Whether the groups came from the data sets; without them each slice is its own group.
        var grouped: Bool
    }

    struct Paired: Codable {
        /// Folds both methods hold, the ones compared.
        var folds: Int
        var patients: Int, images: Int
        var accuracyDifference: Double, accuracyInterval: Interval
        var aucDifference: Double, aucInterval: Interval
        var patientAccuracyDifference: Double, patientAccuracyInterval: Interval
        /// Patients only scratch classifies right, only transfer; McNemar's exact p on them.
        var onlyScratch: Int, onlyTransfer: Int, mcnemarP: Double
        /// The same on slices (not independent: shown for comparison only).
        var sliceOnlyScratch: Int, sliceOnlyTransfer: Int, sliceMcnemarP: Double
    }

    static let resamples = RunEvidence.defaultResamples, seed: UInt64 = 1234

    var folds: [Fold]
    var methods: [MethodSummary] = []
    var paired: Paired?

    /// Loads every run (predictions.csv and the groups of its data set) and computes everything.
    init(runs: [String]) throws {
        try self.init(folds: runs.map(CrossValidation.load))
    }

    /// Everything from folds already loaded.
    init(folds: [Fold]) throws {
        self.folds = folds
        for m in Array(Set(folds.map(\.method))).sorted() {
            let mine = folds.filter { $0.method == m }
            var seen: [String: String] = [:]
            for f in mine {
                for file in f.files {
                    if let other = seen[file] {
                        throw RuntimeError("'\(file)' is a test image of both \(other) and \(f.run): these \(m) runs are not folds "
                                           + "of one cross-validation (each image is tested once)")
                    }
                    seen[file] = f.run
                }
            }
            methods.append(CrossValidation.summarise(m, mine))
        }
        paired = try CrossValidation.pair(folds)
    }

    static func load(_ run: String) throws -> Fold {
        guard let p = try TestPredictions.load(run: run) else {
            throw RuntimeError("no '\(run)/report/predictions.csv': run `disttrain eval \(run)` first")
        }
        let cfg = try TrainConfig.load(run + "/config.json")
        guard !p.files.isEmpty else { throw RuntimeError("'\(run)/report/predictions.csv' has no test rows") }
        // The groups of the fold's data set, by file; a data set without groups makes each slice its own.
        var groupOf: [String: String] = [:]
        if cfg.data.hasSuffix(".h5"), FileManager.default.fileExists(atPath: cfg.data) {
            let ds = try Dataset(path: cfg.data)
            if let g = try ds.groups() { groupOf = Dictionary(zip(try ds.filenames(), g), uniquingKeysWith: { a, _ in a }) }
        }
        let groups = p.files.map { groupOf[$0] ?? "slice:" + $0 }
        return Fold(run: run, method: cfg.method.rawValue, files: p.files, labels: p.labels, scores: p.scores, groups: groups)
    }

    /// Patient-level labels and probabilities: each group's mean probability and its most frequent label.
    static func patients(labels: [Int], scores: [Double], groups: [String]) -> (names: [String], labels: [Int], scores: [Double]) {
        var order: [String] = [], sum: [String: Double] = [:], n: [String: Int] = [:], votes: [String: [Int: Int]] = [:]
        for (g, (y, p)) in zip(groups, zip(labels, scores)) {
            if sum[g] == nil { order.append(g) }
            sum[g, default: 0] += p; n[g, default: 0] += 1; votes[g, default: [:]][y, default: 0] += 1
        }
        let y = order.map { g in votes[g]!.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!.key }
        return (order, y, order.map { sum[$0]! / Double(n[$0]!) })
    }

    /// Figures with intervals over `draws` (index lists into labels/scores).
    static func figures(labels: [Int], scores: [Double], draws: [[Int]]) -> Figures {
        let all = draws.map { d in BinaryFigures(labels: d.map { labels[$0] }, scores: d.map { scores[$0] }) }
        var intervals: [String: Interval] = [:]
        for name in BinaryFigures.names { intervals[name] = Stats.percentileInterval(all.map { $0[name] }) }
        return Figures(value: BinaryFigures(labels: labels, scores: scores), intervals: intervals, images: labels.count)
    }

    static func summarise(_ method: String, _ mine: [Fold]) -> MethodSummary {
        let labels = mine.flatMap(\.labels), scores = mine.flatMap(\.scores), groups = mine.flatMap(\.groups)
        let draws = Stats.groupResamples(labels: labels, groups: groups, count: resamples, seed: seed)
        let slice = figures(labels: labels, scores: scores, draws: draws)
        let pt = patients(labels: labels, scores: scores, groups: groups)
        let patient = figures(labels: pt.labels, scores: pt.scores,
                              draws: Stats.stratifiedResamples(labels: pt.labels, count: resamples, seed: seed))
        func perFold(_ f: Fold) -> (Double, Double, Double) {
            let b = BinaryFigures(labels: f.labels, scores: f.scores)
            let q = patients(labels: f.labels, scores: f.scores, groups: f.groups)
            return (b.accuracy, b.auc, BinaryFigures(labels: q.labels, scores: q.scores).accuracy)
        }
        let rows = mine.map(perFold)
        return MethodSummary(method: method, folds: mine.count, slice: slice, patient: patient, patients: pt.names.count,
                             foldAccuracy: rows.map(\.0), foldAUC: rows.map(\.1), foldPatientAccuracy: rows.map(\.2),
                             grouped: !groups.contains { $0.hasPrefix("slice:") })
    }

    /// Transfer against scratch on the pooled out-of-fold predictions of the same images,
    /// over the folds both methods hold (a cross-validation still running has more of one
    /// method's): every fold's test images must be held by the other method's folds all or
    /// not at all; any other overlap means runs of different cross-validations, and is refused.
    static func pair(_ folds: [Fold]) throws -> Paired? {
        let all = folds.filter { $0.method == "scratch" }, b = folds.filter { $0.method == "transfer" }
        guard !all.isEmpty, !b.isEmpty else { return nil }
        var other: [String: (Int, Double)] = [:]
        for f in b { for (i, file) in f.files.enumerated() { other[file] = (f.labels[i], f.scores[i]) } }
        let scratchFiles = Set(all.flatMap(\.files))
        for (f, held) in all.map({ f in (f, f.files.filter { other[$0] != nil }.count) }) + b.map({ f in (f, f.files.filter(scratchFiles.contains).count) })
        where held != 0 && held != f.files.count {
            throw RuntimeError("\(f.run) shares \(held) of its \(f.files.count) test images with the other method's folds: "
                               + "give both methods' runs of one cross-validation")
        }
        let a = all.filter { other[$0.files[0]] != nil }
        guard !a.isEmpty else {
            throw RuntimeError("the scratch and transfer folds share no test image: give both methods' runs of one cross-validation")
        }
        let files = a.flatMap(\.files), labels = a.flatMap(\.labels), scoresA = a.flatMap(\.scores), groups = a.flatMap(\.groups)
        let scoresB = try files.enumerated().map { i, file -> Double in
            let (y, p) = other[file]!
            guard y == labels[i] else { throw RuntimeError("'\(file)' has label \(labels[i]) in scratch's folds and \(y) in transfer's") }
            return p
        }
        let draws = Stats.groupResamples(labels: labels, groups: groups, count: resamples, seed: seed)
        func difference(_ name: String, _ at: [Int]) -> Double {
            let y = at.map { labels[$0] }
            return BinaryFigures(labels: y, scores: at.map { scoresB[$0] })[name] - BinaryFigures(labels: y, scores: at.map { scoresA[$0] })[name]
        }
        let everything = Array(labels.indices)
        let pa = patients(labels: labels, scores: scoresA, groups: groups), pb = patients(labels: labels, scores: scoresB, groups: groups)
        let patientDraws = Stats.stratifiedResamples(labels: pa.labels, count: resamples, seed: seed)
        func patientDifference(_ at: [Int]) -> Double {
            let y = at.map { pa.labels[$0] }
            return BinaryFigures(labels: y, scores: at.map { pb.scores[$0] }).accuracy - BinaryFigures(labels: y, scores: at.map { pa.scores[$0] }).accuracy
        }
        func discordant(_ y: [Int], _ sa: [Double], _ sb: [Double]) -> (Int, Int) {
            var onlyA = 0, onlyB = 0
            for (t, (p, q)) in zip(y, zip(sa, sb)) {
                let ra = Classifier.decide(score: p) == t, rb = Classifier.decide(score: q) == t
                if ra && !rb { onlyA += 1 }
                if rb && !ra { onlyB += 1 }
            }
            return (onlyA, onlyB)
        }
        let (pOnlyA, pOnlyB) = discordant(pa.labels, pa.scores, pb.scores), (sOnlyA, sOnlyB) = discordant(labels, scoresA, scoresB)
        return Paired(folds: a.count, patients: pa.names.count, images: files.count,
                      accuracyDifference: difference("accuracy", everything),
                      accuracyInterval: Stats.percentileInterval(draws.map { difference("accuracy", $0) }),
                      aucDifference: difference("auc", everything), aucInterval: Stats.percentileInterval(draws.map { difference("auc", $0) }),
                      patientAccuracyDifference: patientDifference(Array(pa.labels.indices)),
                      patientAccuracyInterval: Stats.percentileInterval(patientDraws.map(patientDifference)),
                      onlyScratch: pOnlyA, onlyTransfer: pOnlyB, mcnemarP: Stats.mcnemarExact(b: pOnlyA, c: pOnlyB),
                      sliceOnlyScratch: sOnlyA, sliceOnlyTransfer: sOnlyB, sliceMcnemarP: Stats.mcnemarExact(b: sOnlyA, c: sOnlyB))
    }

    // MARK: output

    static func pct(_ v: Double) -> String { v.isFinite ? String(format: "%.2f", 100 * v) : "n/a" }
    static func pct(_ v: Double, _ i: Interval?) -> String {
        guard let i else { return pct(v) }
        return "\(pct(v)) (\(pct(i.lower))-\(pct(i.upper)))"
    }
    static func meanSD(_ v: [Double]) -> String {
        let (m, sd) = Stats.meanSD(v)
        return sd.isFinite ? String(format: "%.2f +- %.2f", 100 * m, 100 * sd) : pct(m)
    }

    var verdict: String {
        guard let p = paired else { return "Transfer against scratch: needs the folds of both methods." }
        let helped = p.accuracyInterval.lower > 0 ? "transfer helped" : p.accuracyInterval.upper < 0 ? "transfer hurt"
            : "no difference shown (the interval contains 0)"
        let which = p.folds == methods.map(\.folds).max() ? ""
            : " on the \(p.folds) fold\(p.folds == 1 ? "" : "s") both methods have so far,"
        return String(format: "Transfer against scratch, pooled out-of-fold predictions%@ of %d patients (%d slices): slice accuracy %+.2f "
                      + "points (95 %% interval, resampling patients: %+.2f to %+.2f), ROC AUC %+.4f (%+.4f to %+.4f), patient-level "
                      + "accuracy %+.2f points (%+.2f to %+.2f); McNemar on patients p = %.3g (%d right only by scratch, %d only by "
                      + "transfer): %@.",
                      which, p.patients, p.images, 100 * p.accuracyDifference, 100 * p.accuracyInterval.lower, 100 * p.accuracyInterval.upper,
                      p.aucDifference, p.aucInterval.lower, p.aucInterval.upper, 100 * p.patientAccuracyDifference,
                      100 * p.patientAccuracyInterval.lower, 100 * p.patientAccuracyInterval.upper, p.mcnemarP, p.onlyScratch,
                      p.onlyTransfer, helped)
    }

    static let foldColumns = ["method", "fold", "run", "test images", "patients", "accuracy", "ROC AUC", "sensitivity", "specificity",
                              "patient accuracy"]

    var foldRows: [[String]] {
        folds.sorted { ($0.method, $0.run) < ($1.method, $1.run) }.enumerated().map { _, f in
            let b = BinaryFigures(labels: f.labels, scores: f.scores)
            let q = CrossValidation.patients(labels: f.labels, scores: f.scores, groups: f.groups)
            let fold = ((f.run as NSString).deletingLastPathComponent as NSString).lastPathComponent
            return [f.method, fold, f.run, "\(f.labels.count)", "\(q.names.count)", CrossValidation.pct(b.accuracy),
                    String(format: "%.4f", b.auc), CrossValidation.pct(b.sensitivity), CrossValidation.pct(b.specificity),
                    CrossValidation.pct(BinaryFigures(labels: q.labels, scores: q.scores).accuracy)]
        }
    }

    static let methodColumns = ["method", "folds", "accuracy over folds (mean +- sd)", "pooled accuracy (95 % interval)", "pooled ROC AUC",
                                "pooled sensitivity", "pooled specificity", "patients", "patient accuracy over folds",
                                "pooled patient accuracy", "pooled patient ROC AUC"]

    var methodRows: [[String]] {
        methods.map { m in
            let s = m.slice, p = m.patient
            return [m.method, "\(m.folds)", CrossValidation.meanSD(m.foldAccuracy), CrossValidation.pct(s.value.accuracy, s.intervals["accuracy"]),
                    String(format: "%.4f (%.4f-%.4f)", s.value.auc, s.intervals["auc"]?.lower ?? .nan, s.intervals["auc"]?.upper ?? .nan),
                    CrossValidation.pct(s.value.sensitivity, s.intervals["sensitivity"]),
                    CrossValidation.pct(s.value.specificity, s.intervals["specificity"]), "\(m.patients)",
                    CrossValidation.meanSD(m.foldPatientAccuracy), CrossValidation.pct(p.value.accuracy, p.intervals["accuracy"]),
                    String(format: "%.4f (%.4f-%.4f)", p.value.auc, p.intervals["auc"]?.lower ?? .nan, p.intervals["auc"]?.upper ?? .nan)]
        }
    }

    var markdown: String {
        var md = "# Patient-level cross-validation\n\n"
        md += "Each fold's test split holds whole patients (groups) that its model never saw; pooled figures use every image once, "
            + "predicted by the fold that held it out. Intervals: 95 %, \(CrossValidation.resamples) bootstrap resamples of patients "
            + "(stratified by class), not of slices. A patient's probability is the mean of its slices'.\n\n"
        if methods.contains(where: { !$0.grouped }) {
            md += "**Some data sets have no groups: their slices were resampled as if independent.**\n\n"
        }
        md += "## Per method\n\n" + Comparison.markdownTable(CrossValidation.methodColumns, methodRows) + "\n"
        md += verdict + "\n\n"
        if let p = paired {
            md += String(format: "On slices, McNemar would give p = %.3g (%d against %d discordant slices); slices of one patient are not "
                         + "independent, so that p overstates the evidence and is not the test.\n\n",
                         p.sliceMcnemarP, p.sliceOnlyScratch, p.sliceOnlyTransfer)
        }
        md += "## Per fold\n\n" + Comparison.markdownTable(CrossValidation.foldColumns, foldRows)
        return md
    }

    var foldsCSV: String { ([CrossValidation.foldColumns] + foldRows).map(CSV.row).joined() }

    /// Every pooled out-of-fold prediction: method, fold run, file, group, label, probability.
    var predictionsCSV: String {
        var text = CSV.row(["method", "run", "file", "group", "label", "p_1"])
        for f in folds {
            for i in f.files.indices {
                text += CSV.row([f.method, f.run, f.files[i], f.groups[i], String(f.labels[i]), String(format: "%.9g", f.scores[i])])
            }
        }
        return text
    }

    struct Summary: Codable { var methods: [MethodSummary]; var paired: Paired?; var verdict: String }

    func write(to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try durableWrite(dir + "/cv.md", data: Data(markdown.utf8))
        try durableWrite(dir + "/folds.csv", data: Data(foldsCSV.utf8))
        try durableWrite(dir + "/oof-predictions.csv", data: Data(predictionsCSV.utf8))
        try durableWrite(dir + "/cv.json", data: try enc.encode(Summary(methods: methods, paired: paired, verdict: verdict)))
    }
}
