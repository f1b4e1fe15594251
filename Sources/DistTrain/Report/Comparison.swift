import Foundation

/// One run's test predictions (report/predictions.csv), by image file.
struct TestPredictions {
    var files: [String] = [], labels: [Int] = [], scores: [Double] = []

    /// nil when the run was evaluated before predictions.csv existed.
    static func load(run: String) throws -> TestPredictions? {
        let path = run + "/report/predictions.csv"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try parse(CSV.read(path), path: path)
    }

    /// The records of a predictions.csv (eval writes `split,index,file,label,p_<class>` through CSV.row): columns
    /// by header name, the probability in the last column (`p_...`). File names are data: a quoted comma, quote or
    /// newline stays in its field. A row that is not whole is an error naming the file and line, never skipped:
    /// a report over part of the images, or over injected ones, would be wrong and look right.
    static func parse(_ records: [CSV.Record], path: String) throws -> TestPredictions {
        guard let header = records.first else { throw RuntimeError("\(path): empty (no header split,index,file,label,p_...)") }
        func column(_ name: String) throws -> Int {
            guard let i = header.fields.firstIndex(of: name) else {
                throw RuntimeError("\(path) line \(header.line): the header has no column '\(name)' "
                                   + "(expected split,index,file,label,p_...)")
            }
            return i
        }
        let split = try column("split"), file = try column("file"), label = try column("label"), score = header.fields.count - 1
        guard header.fields[score].hasPrefix("p_"), ![split, file, label].contains(score) else {
            throw RuntimeError("\(path) line \(header.line): the last column is not a probability 'p_...'")
        }
        var p = TestPredictions()
        var seen: [String: Int] = [:]
        for r in records.dropFirst() {
            let at = "\(path) line \(r.line)"
            guard r.fields.count == header.fields.count else {
                throw RuntimeError("\(at): \(r.fields.count) fields, the header has \(header.fields.count)")
            }
            let f = r.fields
            guard ["train", "val", "test"].contains(f[split]) else {
                throw RuntimeError("\(at): split '\(f[split])' is not train, val or test")
            }
            guard let y = Int(f[label]), y == 0 || y == 1 else { throw RuntimeError("\(at): label '\(f[label])' is not 0 or 1") }
            guard let v = Double(f[score]), v.isFinite, (0...1).contains(v) else {
                throw RuntimeError("\(at): '\(f[score])' is not a probability in [0, 1]")
            }
            guard f[split] == "test" else { continue }
            // Images are paired across runs by file, so a file twice would pair the wrong rows.
            if let first = seen[f[file]] { throw RuntimeError("\(at): test image '\(f[file])' is listed twice (first on line \(first))") }
            seen[f[file]] = r.line
            p.files.append(f[file]); p.labels.append(y); p.scores.append(v)
        }
        return p
    }

    /// `other`'s scores re-ordered as self's files; nil when they are not the same images with the same labels.
    func aligned(_ other: TestPredictions) -> [Double]? {
        guard files.count == other.files.count else { return nil }
        let at = Dictionary(zip(other.files, zip(other.labels, other.scores)), uniquingKeysWith: { a, _ in a })
        guard at.count == files.count else { return nil }
        var out: [Double] = []
        out.reserveCapacity(files.count)
        for (f, y) in zip(files, labels) {
            guard let (label, score) = at[f], label == y else { return nil }
            out.append(score)
        }
        return out
    }
}

/// Runs of one method (they may differ only in --seed): mean +- sd across
/// them, the mean's interval over resampled test images, and the ensemble of their probabilities.
struct MethodGroup {
    var method: String
    var members: [Int]
    var accuracy: (mean: Double, sd: Double), auc: (mean: Double, sd: Double)
    /// Accuracy on the clean test subset (no near-duplicate in train), mean +- sd over the members that have it.
    var clean: (mean: Double, sd: Double)
    /// Each member's test scores in the first member's image order (when all have predictions on the same images).
    var scores: [[Double]]?
    /// The mean accuracy and ROC AUC over the members with their 95 % intervals, test images resampled (Stats.resampledMean).
    var meanAccuracy: (mean: Double, interval: Interval)?, meanAUC: (mean: Double, interval: Interval)?
    /// Mean probability over the members (when all have predictions on the same images).
    var ensemble: TestPredictions?
    var ensembleEvidence: RunEvidence?
}

/// The seed-mean comparison of two methods with several runs each: mean(transfer) - mean(scratch) over the same resampled
/// test images, and each seed's own pair (the k-th run of one method against the k-th of the other).
struct SeedComparison {
    var accuracy: (difference: Double, interval: Interval), auc: (difference: Double, interval: Interval)
    /// Per seed pair: the paired test, and the two runs' test accuracies (scratch, transfer).
    var pairs: [(test: PairedComparison, accuracyA: Double, accuracyB: Double)]

    var sentence: String {
        String(format: "Mean over seeds: transfer %+.2f points of test accuracy over scratch (95 %% interval over resampled test "
               + "images, every run on the same draws: %+.2f to %+.2f), ROC AUC %+.4f (%+.4f to %+.4f).",
               100 * accuracy.difference, 100 * accuracy.interval.lower, 100 * accuracy.interval.upper,
               auc.difference, auc.interval.lower, auc.interval.upper)
    }

    static let columns = ["seed pair", "scratch accuracy", "transfer accuracy", "difference (95 % paired interval)",
                          "ROC AUC difference (interval)", "McNemar p (discordant images)"]

    var rows: [[String]] {
        pairs.map { p, a, b in
            ["\(p.nameB) vs \(p.nameA)", Comparison.f(a), Comparison.f(b),
             String(format: "%+.2f points (%+.2f to %+.2f)", 100 * p.accuracyDifference, 100 * p.accuracyInterval.lower,
                    100 * p.accuracyInterval.upper),
             String(format: "%+.4f (%+.4f to %+.4f)", p.aucDifference, p.aucInterval.lower, p.aucInterval.upper),
             String(format: "%.3g (%d)", p.mcnemarP, p.onlyA + p.onlyB)]
        }
    }
}

/// The comparison table of several evaluated runs, and its answer to "does
/// transfer help?": the paired difference with its interval and McNemar's p.
struct Comparison {
    let summaries: [EvalSummary]
    let runs: [String]
    let predictions: [TestPredictions?]
    /// Runs by method, with their seed statistics and ensembles (bootstraps: computed once).
    let groups: [MethodGroup]
    /// Transfer against scratch on the same images, when both have per-image predictions.
    let paired: PairedComparison?
    /// With several runs of both methods: the difference of their means and each seed's pair.
    let seeds: SeedComparison?

    init(summaries: [EvalSummary], runs: [String], predictions: [TestPredictions?]? = nil) {
        self.summaries = summaries; self.runs = runs
        let predictions = predictions ?? Array(repeating: nil, count: summaries.count)
        self.predictions = predictions
        groups = Comparison.group(summaries, predictions)
        paired = Comparison.pair(groups, predictions)
        seeds = Comparison.seedComparison(groups, summaries, runs)
    }

    static let columns = ["method", "arch", "image size", "best epoch", "epochs", "val accuracy", "val loss", "test accuracy",
                          "95 % interval", "test loss", "sensitivity", "specificity", "precision", "F1", "ROC AUC", "95 % interval",
                          "ECE (T-scaled)", "clean test accuracy (images)", "1-NN baseline", "wall time", "img/s",
                          "peak RSS/rank MiB", "run"]

    static func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
    static func range(_ i: Interval?) -> String { i.map { "\(f($0.lower))-\(f($0.upper))" } ?? "n/a" }

    func cells(_ s: EvalSummary) -> [String] {
        let f = Comparison.f, t = s.test, e = s.evidence
        return [s.method ?? "?", s.arch ?? "?", "\(s.imageSize ?? 0)", "\(s.bestEpoch ?? 0)", "\(s.epochs ?? 0)",
                f(s.val.accuracy), f(s.val.loss), f(t.accuracy), Comparison.range(e?.intervals["accuracy"]), f(t.loss),
                f(t.sensitivity), f(t.specificity), f(t.precision), f(t.f1), f(t.auc), Comparison.range(e?.intervals["auc"]),
                e.map { "\(f($0.ece)) (\(f($0.eceScaled)))" } ?? "n/a",
                s.clean.map { "\(f($0.figures.accuracy)) \(Comparison.range($0.intervals["accuracy"])) (\($0.images))" } ?? "n/a",
                f(s.clean?.nearestNeighbourAccuracy ?? .nan), formatDuration(s.wallSeconds ?? 0),
                String(format: "%.1f", s.imagesPerSecond ?? 0), s.peakRSSMiB.map { String(format: "%.0f", $0) } ?? "n/a",
                ((s.run ?? "") as NSString).lastPathComponent]
    }

    static func group(_ summaries: [EvalSummary], _ predictions: [TestPredictions?]) -> [MethodGroup] {
        var order: [String] = []
        var byMethod: [String: [Int]] = [:]
        for (i, s) in summaries.enumerated() {
            let m = s.method ?? "?"
            if byMethod[m] == nil { order.append(m) }
            byMethod[m, default: []].append(i)
        }
        return order.map { m in
            let members = byMethod[m]!
            var g = MethodGroup(method: m, members: members,
                                accuracy: Stats.meanSD(members.map { summaries[$0].test.accuracy }),
                                auc: Stats.meanSD(members.map { summaries[$0].test.auc }),
                                clean: Stats.meanSD(members.compactMap { summaries[$0].clean?.figures.accuracy }))
            let preds = members.compactMap { predictions[$0] }
            if members.count > 1, preds.count == members.count, let first = preds.first {
                let aligned = preds.compactMap { first.aligned($0) }
                if aligned.count == preds.count {
                    var mean = [Double](repeating: 0, count: first.scores.count)
                    for a in aligned { for (k, v) in a.enumerated() { mean[k] += v / Double(preds.count) } }
                    g.scores = aligned
                    g.meanAccuracy = Stats.resampledMean("accuracy", labels: first.labels, models: aligned)
                    g.meanAUC = Stats.resampledMean("auc", labels: first.labels, models: aligned)
                    g.ensemble = TestPredictions(files: first.files, labels: first.labels, scores: mean)
                    g.ensembleEvidence = RunEvidence(testLabels: first.labels, testScores: mean, valLabels: [], valScores: [])
                }
            }
            return g
        }
    }

    /// Transfer against scratch on the same images: the seed ensembles when a
    /// method has several runs, else the runs themselves.
    static func pair(_ g: [MethodGroup], _ predictions: [TestPredictions?]) -> PairedComparison? {
        guard let scratch = g.first(where: { $0.method == "scratch" }), let transfer = g.first(where: { $0.method == "transfer" }) else {
            return nil
        }
        func predictionsOf(_ m: MethodGroup) -> TestPredictions? { m.ensemble ?? (m.members.count == 1 ? predictions[m.members[0]] : nil) }
        guard let a = predictionsOf(scratch), let b = predictionsOf(transfer), let bScores = a.aligned(b) else { return nil }
        let nameA = scratch.members.count > 1 ? "scratch (ensemble of \(scratch.members.count))" : "scratch"
        let nameB = transfer.members.count > 1 ? "transfer (ensemble of \(transfer.members.count))" : "transfer"
        return PairedComparison(nameA: nameA, nameB: nameB, labels: a.labels, scoresA: a.scores, scoresB: bScores)
    }

    /// Both methods with several runs on the same images: mean(transfer) - mean(scratch) on the same resampled images,
    /// and the k-th scratch run against the k-th transfer run (in the order given, e.g. by seed).
    static func seedComparison(_ g: [MethodGroup], _ summaries: [EvalSummary], _ runs: [String]) -> SeedComparison? {
        guard let scratch = g.first(where: { $0.method == "scratch" }), let transfer = g.first(where: { $0.method == "transfer" }),
              let a = scratch.scores, let pa = scratch.ensemble, let bScores = transfer.scores, let pb = transfer.ensemble else {
            return nil
        }
        // transfer's scores in scratch's image order
        let b = bScores.compactMap { pa.aligned(TestPredictions(files: pb.files, labels: pb.labels, scores: $0)) }
        guard b.count == bScores.count else { return nil }
        let labels = pa.labels
        func name(_ i: Int) -> String { (runs[i] as NSString).lastPathComponent }
        let pairs = zip(zip(scratch.members, transfer.members), zip(a, b)).map { ids, scores in
            (test: PairedComparison(nameA: name(ids.0), nameB: name(ids.1), labels: labels, scoresA: scores.0, scoresB: scores.1),
             accuracyA: summaries[ids.0].test.accuracy, accuracyB: summaries[ids.1].test.accuracy)
        }
        return SeedComparison(accuracy: Stats.pairedMeanDifference("accuracy", labels: labels, modelsA: a, modelsB: b),
                              auc: Stats.pairedMeanDifference("auc", labels: labels, modelsA: a, modelsB: b), pairs: pairs)
    }

    /// Does transfer help? With per-image predictions: the paired test. Without
    /// (runs evaluated before predictions.csv): the point estimates, said to be only that.
    var verdict: String {
        if let p = paired { return "Does transfer help? " + p.sentence }
        guard let scratch = summaries.first(where: { $0.method == "scratch" }),
              let transfer = summaries.first(where: { $0.method == "transfer" }) else {
            return ""
        }
        let d = transfer.test.accuracy - scratch.test.accuracy
        let n = Double(max(transfer.test.count, 1))
        return String(format: "Does transfer help? Point estimates only (no report/predictions.csv: run `disttrain eval` again "
                      + "for intervals and the paired test): test accuracy %.2f %% (transfer) vs %.2f %% (scratch), "
                      + "%+.2f points (%+.0f of %d test images); best epochs %d vs %d.",
                      100 * transfer.test.accuracy, 100 * scratch.test.accuracy, 100 * d, d * n, transfer.test.count,
                      transfer.bestEpoch ?? 0, scratch.bestEpoch ?? 0)
    }

    static let groupColumns = ["method", "runs", "test accuracy mean +- sd", "mean's 95 % interval (test images resampled)",
                               "ROC AUC mean +- sd", "mean's 95 % interval", "clean test accuracy mean +- sd", "ensemble accuracy",
                               "95 % interval", "ensemble ROC AUC", "95 % interval"]

    /// Rows for methods with several runs (seeds).
    var groupRows: [[String]] {
        groups.filter { $0.members.count > 1 }.map { g in
            let f = Comparison.f, e = g.ensembleEvidence
            return [g.method, "\(g.members.count)", "\(f(g.accuracy.mean)) +- \(f(g.accuracy.sd))",
                    Comparison.range(g.meanAccuracy?.interval),
                    "\(f(g.auc.mean)) +- \(f(g.auc.sd))", Comparison.range(g.meanAUC?.interval), "\(f(g.clean.mean)) +- \(f(g.clean.sd))",
                    f(e?.figures.accuracy ?? .nan), Comparison.range(e?.intervals["accuracy"]), f(e?.figures.auc ?? .nan),
                    Comparison.range(e?.intervals["auc"])]
        }
    }

    /// Every cell goes through `markdownEscape`: a run or method name is text, never table syntax or markup.
    static func markdownTable(_ columns: [String], _ rows: [[String]]) -> String {
        func line(_ cells: [String]) -> String { "| " + cells.map(markdownEscape).joined(separator: " | ") + " |\n" }
        return line(columns) + "|" + columns.map { _ in "---" }.joined(separator: "|") + "|\n" + rows.map(line).joined()
    }

    var markdown: String {
        var s = Comparison.markdownTable(Comparison.columns, summaries.map(cells))
        let seeds = groupRows
        if !seeds.isEmpty { s += "\nAcross seeds:\n\n" + Comparison.markdownTable(Comparison.groupColumns, seeds) }
        if !verdict.isEmpty { s += "\n" + verdict + "\n" }
        if let sc = self.seeds {
            s += "\n" + sc.sentence + " Seed by seed:\n\n" + Comparison.markdownTable(SeedComparison.columns, sc.rows)
        }
        s += "\nIntervals: 95 %, stratified bootstrap (\(RunEvidence.defaultResamples) resamples) of the test images; "
            + "ECE with 15 bins, in brackets after temperature scaling fitted on validation.\n"
        return s
    }

    var csv: String { ([CSV.row(Comparison.columns)] + summaries.map { CSV.row(cells($0)) }).joined() }

    /// Validation accuracy and loss per epoch, one line per run (named by its
    /// folder), from each run's metrics (.h5, or .csv): how the methods learn, on the split
    /// that chooses checkpoints.
    func curves() throws -> [ReportFigures.Figure] {
        let palette: [Color] = [.train, .val, .test, .model, Color(r: 148, g: 103, b: 189), Color(r: 140, g: 86, b: 75),
                                Color(r: 227, g: 119, b: 194), Color(r: 127, g: 127, b: 127)]
        let logs = try runs.map { try MetricsLog.rows(ofRun: $0) }
        func series(_ f: (EpochRow) -> Double) -> [Plot.Series] {
            zip(runs, logs).enumerated().map { k, run in
                Plot.Series(name: (run.0 as NSString).lastPathComponent, color: palette[k % palette.count],
                            points: run.1.map { (Double($0.epoch), f($0)) })
            }
        }
        return [("val-accuracy", Plot(title: "Validation accuracy per epoch", xLabel: "epoch", yLabel: "accuracy",
                                      series: series { $0.val.accuracy }, yRange: (0.4, 1))),
                ("val-loss", Plot(title: "Validation loss per epoch", xLabel: "epoch", yLabel: "cross-entropy",
                                  series: series { $0.val.loss }))]
            .map { ReportFigures.Figure(name: $0.0, svg: $0.1.svg, canvas: $0.1.canvas) }
    }

    func html(relativeTo dir: String, figures: [ReportFigures.Figure] = []) -> String {
        func table(_ columns: [String], _ rows: [[String]]) -> String {
            "<table><tr>" + columns.map { "<th>\(htmlEscape($0))</th>" }.joined() + "</tr>"
                + rows.map { "<tr>" + $0.map { "<td>\(htmlEscape($0))</td>" }.joined() + "</tr>" }.joined() + "</table>"
        }
        let seeds = groupRows.isEmpty ? "" : "<h2>Across seeds</h2>" + table(Comparison.groupColumns, groupRows)
        let seedPairs = self.seeds.map { "<p>\(htmlEscape($0.sentence))</p>" + table(SeedComparison.columns, $0.rows) } ?? ""
        // Both models' CAMs on the same fixed slices (the first rows of each cam-grid).
        let pictures = zip(runs, summaries).map { r, s in
            let rel = htmlEscape(hrefPath(relativePath(from: dir, to: r + "/report")))
            return "<h3>\(htmlEscape(s.method ?? r)) (\(htmlEscape(r)))</h3><p><a href=\"\(rel)/index.html\">full report</a></p>"
                + "<p><img src=\"\(rel)/cam-grid.png\" style=\"max-width:100%\"></p>"
        }.joined()
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain: comparison</title>
        <style>body{font-family:sans-serif;margin:24px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
        table{border-collapse:collapse}</style>
        </head><body><h1>Scratch vs transfer</h1>\(table(Comparison.columns, summaries.map(cells)))\(seeds)
        <p><b>\(htmlEscape(verdict))</b></p>\(seedPairs)
        <p>Intervals: 95 %, stratified bootstrap (\(RunEvidence.defaultResamples) resamples) of the test images; ECE with 15 bins,
        in brackets after temperature scaling fitted on validation.</p>
        <h2>Learning curves</h2><p>\(figures.map(\.svg).joined(separator: " "))</p>
        <h2>CAMs on the same test slices</h2><p>Rows: the fixed sample of test slices (then each model's own mistakes), each with
        its file, true and predicted label and probability; columns: the slice, the input gradient and each CAM, as labelled.</p>
        \(pictures)</body></html>
        """
    }
}

/// A relative path as an href: each component percent-encoded (a folder named `a#b` or `x?y` still links to
/// itself) and "./" in front unless it starts with "..", so no folder name (`javascript:...`) reads as a scheme.
func hrefPath(_ relative: String) -> String {
    let encoded = relative.split(separator: "/", omittingEmptySubsequences: false).map { part -> String in
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#%")
        return part.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }.joined(separator: "/")
    return encoded.hasPrefix("../") || encoded == ".." ? encoded : "./" + encoded
}

/// Text for a Markdown table cell: a backslash before each character that is inline Markdown or GFM syntax
/// (CommonMark lets any ASCII punctuation be escaped so), and line breaks as spaces, so a name cannot end a
/// cell or the row, open a code span, a link or image, emphasis, strike-through, math, an entity or HTML.
/// (Characters that mean something only at the start of a line, `#`, `-`, `+`, `>`..., cannot get there.)
func markdownEscape(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
        switch c {
        case "\\", "`", "*", "_", "[", "]", "<", ">", "|", "~", "&", "$":
            out += "\\" + String(c)
        case "\r", "\n", "\u{2028}", "\u{2029}", "\u{85}", "\u{0B}", "\u{0C}":
            out += " "
        default:
            out.unicodeScalars.append(c)
        }
    }
    return out
}

func relativePath(from dir: String, to target: String) -> String {
    let a = URL(fileURLWithPath: dir).standardizedFileURL.pathComponents
    let b = URL(fileURLWithPath: target).standardizedFileURL.pathComponents
    var i = 0
    while i < min(a.count, b.count) && a[i] == b[i] { i += 1 }
    return (Array(repeating: "..", count: a.count - i) + b[i...]).joined(separator: "/")
}
