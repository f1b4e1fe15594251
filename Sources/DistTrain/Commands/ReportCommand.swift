import ArgumentParser
import Foundation

/// `disttrain report RUN_A RUN_B ...`: the comparison the mission asks for.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare runs (e.g. scratch vs transfer): Markdown, CSV and an HTML page with both models' CAMs on the same slices.",
        discussion: """
        Reads each run's report/summary.json and predictions.csv (run `disttrain eval RUN` first). Per run: the test figures \
        with 95 % stratified-bootstrap intervals and calibration. Runs of one method that differ only in --seed are grouped: \
        mean +- sd across seeds, the mean's interval over resampled test images (every run on the same draws), the clean-subset \
        mean and the ensemble of their probabilities. Transfer against scratch: the paired-bootstrap interval of the accuracy \
        and AUC differences and McNemar's exact test on the same test images (the seed ensembles); with several seeds of both, \
        also the difference of the means and each seed's pair (the k-th run of each method, in the order given).
        """)

    @Argument(help: "Run folders, each evaluated with `disttrain eval`.") var runs: [String]
    @Option(help: "Output folder (default: the parent of the first run, as comparison/; with --folds, as cv-report/ beside the folds).")
    var out: String?
    @Flag(help: """
        The runs are the folds of a patient-level cross-validation (launch/cv: ROOT/fold-K/METHOD): per-fold figures, mean +- sd, \
        pooled out-of-fold predictions with intervals resampling patients, patient-level figures and the paired test of \
        transfer against scratch; writes cv.md, cv.json, folds.csv, oof-predictions.csv.
        """)
    var folds = false

    func validate() throws { guard !runs.isEmpty else { throw ValidationError("give at least one run folder") } }

    func run() throws {
        if folds {
            let cv = try CrossValidation(runs: runs)
            let parent = ((runs[0] as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
            let dir = out ?? ((parent.isEmpty ? "." : parent) as NSString).appendingPathComponent("cv-report")
            try cv.write(to: dir)
            print(cv.markdown)
            print("wrote \(dir)/cv.md, cv.json, folds.csv, oof-predictions.csv")
            return
        }
        var summaries: [EvalSummary] = [], predictions: [TestPredictions?] = []
        for r in runs {
            predictions.append(try TestPredictions.load(run: r))
            let path = r + "/report/summary.json"
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RuntimeError("no '\(path)': run `disttrain eval \(r)` first")
            }
            let dec = JSONDecoder()
            dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            do {
                summaries.append(try dec.decode(EvalSummary.self, from: data))
            } catch {
                throw RuntimeError("'\(path)' is not a summary `disttrain eval` writes (\(Report.describe(error)))")
            }
        }
        // Everything is computed before anything is written: a run that does not read leaves no comparison behind.
        let dir = out ?? (((runs[0] as NSString).deletingLastPathComponent as NSString).appendingPathComponent("comparison"))
        let table = Comparison(summaries: summaries, runs: runs, predictions: predictions)
        let markdown = table.markdown, csv = table.csv
        let figures = try table.curves()
        let html = table.html(relativeTo: dir, figures: figures)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try durableWrite(dir + "/comparison.md", data: Data(markdown.utf8))
        try durableWrite(dir + "/comparison.csv", data: Data(csv.utf8))
        for f in figures { try f.canvas.write("\(dir)/\(f.name).png") }
        try durableWrite(dir + "/index.html", data: Data(html.utf8))
        print(markdown)
        print("wrote \(dir)/comparison.md, comparison.csv, index.html, " + figures.map { $0.name + ".png" }.joined(separator: ", "))
    }

    /// A decoding error in one line: what is wrong and at which key.
    static func describe(_ error: Error) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let keys = c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return keys.isEmpty ? "" : " at '" + keys.joined(separator: ".") + "'"
        }
        switch error {
        case DecodingError.keyNotFound(let key, let c): return "no '\(key.stringValue)'" + path(c)
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c): return "wrong type" + path(c)
        case DecodingError.dataCorrupted(let c): return (c.codingPath.isEmpty ? "not JSON" : "a bad value") + path(c)
        default: return "\(error)".replacingOccurrences(of: "\n", with: " ")
        }
    }
}
