import Cams
import Foundation

/// The comparison table of several evaluated runs, and its verdict on transfer.
struct Comparison {
    let summaries: [EvalSummary]
    let runs: [String]

    static let columns = ["method", "arch", "image size", "best epoch", "epochs", "val accuracy", "val loss", "test accuracy", "test loss",
                          "sensitivity", "specificity", "precision", "F1", "ROC AUC", "wall time", "img/s", "peak RSS/rank MiB"]

    func cells(_ s: EvalSummary) -> [String] {
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let t = s.test
        return [s.method ?? "?", s.arch ?? "?", "\(s.imageSize ?? 0)", "\(s.bestEpoch ?? 0)", "\(s.epochs ?? 0)",
                f(s.val.accuracy), f(s.val.loss), f(t.accuracy), f(t.loss), f(t.sensitivity), f(t.specificity), f(t.precision), f(t.f1),
                f(t.auc), formatDuration(s.wallSeconds ?? 0), String(format: "%.1f", s.imagesPerSecond ?? 0),
                s.peakRSSMiB.map { String(format: "%.0f", $0) } ?? "n/a"]
    }

    /// Does transfer help? Compared on test accuracy of each run's best (validation) checkpoint.
    var verdict: String {
        guard let scratch = summaries.first(where: { $0.method == "scratch" }),
              let transfer = summaries.first(where: { $0.method == "transfer" }) else {
            return ""
        }
        let d = transfer.test.accuracy - scratch.test.accuracy
        let n = Double(max(transfer.test.count, 1))
        // One test image is 1/n; differences within ~2 images are noise on this split.
        let word = abs(d) * n <= 2 ? "no measurable difference" : d > 0 ? "transfer helped" : "transfer did not help"
        return String(format: "Does transfer help? %@: test accuracy %.2f %% (transfer) vs %.2f %% (scratch), "
                      + "%+.2f points (%+.0f of %d test images); best epochs %d vs %d.",
                      word, 100 * transfer.test.accuracy, 100 * scratch.test.accuracy, 100 * d, d * n, transfer.test.count,
                      transfer.bestEpoch ?? 0, scratch.bestEpoch ?? 0)
    }

    var markdown: String {
        var s = "| " + Comparison.columns.joined(separator: " | ") + " |\n"
            + "|" + Comparison.columns.map { _ in "---" }.joined(separator: "|") + "|\n"
        for x in summaries { s += "| " + cells(x).joined(separator: " | ") + " |\n" }
        if !verdict.isEmpty { s += "\n" + verdict + "\n" }
        return s
    }

    var csv: String {
        ([Comparison.columns.joined(separator: ",")] + summaries.map { cells($0).joined(separator: ",") }).joined(separator: "\n") + "\n"
    }

    func html(relativeTo dir: String) -> String {
        let head = "<tr>" + Comparison.columns.map { "<th>\($0)</th>" }.joined() + "</tr>"
        let body = summaries.map { "<tr>" + cells($0).map { "<td>\(htmlEscape($0))</td>" }.joined() + "</tr>" }.joined()
        // Both models' CAMs on the same fixed slices (the first rows of each cam-grid).
        let pictures = zip(runs, summaries).map { r, s in
            let rel = htmlEscape(relativePath(from: dir, to: r + "/report"))
            return "<h3>\(htmlEscape(s.method ?? r)) (\(htmlEscape(r)))</h3><p><a href=\"\(rel)/index.html\">full report</a></p>"
                + "<p><img src=\"\(rel)/cam-grid.png\" style=\"max-width:100%\"></p>"
        }.joined()
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain: comparison</title>
        <style>body{font-family:sans-serif;margin:24px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
        table{border-collapse:collapse}</style>
        </head><body><h1>Scratch vs transfer</h1><table>\(head)\(body)</table><p>\(htmlEscape(verdict))</p>
        <h2>CAMs on the same test slices</h2><p>Rows: the fixed sample of test slices (then each model's own mistakes);
        columns: slice, input gradient, \(CAMKind.allCases.map(\.rawValue).joined(separator: ", ")).</p>\(pictures)</body></html>
        """
    }
}

func relativePath(from dir: String, to target: String) -> String {
    let a = URL(fileURLWithPath: dir).standardizedFileURL.pathComponents
    let b = URL(fileURLWithPath: target).standardizedFileURL.pathComponents
    var i = 0
    while i < min(a.count, b.count) && a[i] == b[i] { i += 1 }
    return (Array(repeating: "..", count: a.count - i) + b[i...]).joined(separator: "/")
}
