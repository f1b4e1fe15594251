import Cams
import Foundation

/// RUN/external/NAME/index.html: a run on another data set. Every value from
/// a file or a name goes through `htmlEscape`; the sections are ReportPage's.
enum ExternalPage {
    static func html(_ s: ExternalSummary, cams: [CAMKind], rows: [String], plots: [ReportFigures.Figure]) -> String {
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let counts = zip(s.classNames, s.classCounts).map { "\(htmlEscape($0)) \($1)" }.joined(separator: ", ")
        let figures: String
        if let o = s.oneClass {
            figures = """
            <table class=m><tr><th>figure</th><th>value</th><th>95 % interval (Clopper-Pearson, exact)</th></tr>
            <tr><td>\(o.figure)</td><td>\(f(o.value))</td><td>\(f(o.interval.lower)) to \(f(o.interval.upper))</td></tr></table>
            """
        } else {
            figures = ReportPage.metricsTable([("external", s.metrics)]) + ReportPage.evidenceSection(s.evidence, split: "external")
        }
        let files = ["predictions.csv", "summary.json"] + plots.map { $0.name + ".png" } + ["cam-grid.png"]
            + (s.localization == nil ? [] : ["localization.csv"])
        let masks = s.localization.map { l in "\(l.map(\.images).max() ?? 0) slices with lesion masks" }
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain external evaluation: \(htmlEscape(s.name))</title>
        \(ReportPage.style)</head><body>
        <h1>\(htmlEscape(s.name)): external evaluation</h1>
        <p>Run <code>\(htmlEscape(s.run))</code>, checkpoint <code>\(htmlEscape(s.checkpoint))</code>, on <code>\(htmlEscape(s.set))</code>
        (\(htmlEscape(s.form.rawValue)), \(s.metrics.count) images: \(counts)), prepared as the run's inputs: \(s.imageSize)x\(s.imageSize),
        \(s.channels) channel(s), the run's normalisation\(s.window.map { ", HU window \(htmlEscape($0))" } ?? "").</p>
        <p><b>\(htmlEscape(s.note))</b></p>
        <h2>Metrics</h2>
        \(figures)
        <p>Calibration: expected calibration error (15 bins) \(f(s.ece)).</p>
        <p>\(plots.map(\.svg).joined(separator: " "))</p>
        <p>Files: \(files.map { "<a href=\"\($0)\">\($0)</a>" }.joined(separator: ", ")).</p>
        \(ReportPage.localizationTable(s.localization, what: masks))
        \(ReportPage.explanations(cams: cams, rows: rows, layer: s.camLayer, of: "slices of this set"))</body></html>
        """
    }
}
