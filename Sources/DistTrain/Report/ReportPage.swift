import Cams
import Foundation

/// The report's HTML: report/index.html of one run. Every value from a file
/// or a name goes through `htmlEscape`.
enum ReportPage {
    /// One table row of the explanations: the slice's file, truth, probability
    /// and correctness, then its pictures under cams/.
    static func explanationRow(name: String, file: String, truth: String, classLabel: String, probability: Double, correct: Bool,
                               columns: [String], size: Int) -> String {
        "<tr><th>\(htmlEscape(file))<br>true \(htmlEscape(truth))<br>p(\(htmlEscape(classLabel))) = \(String(format: "%.3f", probability))"
            + "<br>\(correct ? "correct" : "<b>wrong</b>")</th>"
            + columns.map { "<td><img src=\"cams/\(htmlEscape(name))-\(htmlEscape($0)).png\" width=\"\(min(size, 160))\"></td>" }.joined()
            + "</tr>"
    }

    static func html(_ s: EvalSummary, cams: [CAMKind], rows: [String], plots: [ReportFigures.Figure] = []) -> String {
        let rss = s.peakRSSMiB.map { String(format: ", peak RSS %.0f MiB per rank", $0) } ?? ""
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain report: \(htmlEscape(s.run ?? ""))</title>
        \(style)</head><body>
        <h1>\(htmlEscape(s.method ?? "")) \(htmlEscape(s.arch ?? "")), \(s.imageSize ?? 0)x\(s.imageSize ?? 0)</h1>
        <p>Run <code>\(htmlEscape(s.run ?? ""))</code>, checkpoint <code>\(htmlEscape(s.checkpoint))</code>;
        best epoch (validation loss) \(s.bestEpoch ?? 0) of \(s.epochs ?? 0);
        training wall-clock \(formatDuration(s.wallSeconds ?? 0)), mean \(String(format: "%.1f", s.imagesPerSecond ?? 0)) img/s\(rss).</p>
        <h2>Metrics of the checkpoint</h2>
        \(metricsTable([("val", s.val), ("test", s.test)]))
        \(plots.first { $0.name == "confusion" }.map { "<p>\($0.svg)</p>" } ?? "")
        \(evidenceSection(s.evidence))
        \(cleanSection(s.clean))
        \(ttaSection(s.tta))
        <h2>Curves per epoch</h2>
        <p>\(plots.filter { $0.name != "confusion" }.map(\.svg).joined(separator: " "))</p>
        <p>As PNG files (the same plots): \(plots.map { "<a href=\"\($0.name).png\">\($0.name)</a>" }.joined(separator: ", ")),
        and <a href="cam-grid.png">the CAM grid</a>.</p>
        <h2>First-layer kernels</h2><p>conv1, one tile per output channel; gray = 0, white positive, black negative, one scale for all.</p>
        <p><img src="kernels.png" alt="conv1 kernels"></p>
        \(localizationTable(s.localization))
        \(lungSection(s.lungs))
        \(explanations(cams: cams, rows: rows, layer: s.camLayer ?? "layer4", of: "test slices"))</body></html>
        """
    }

    /// The page style every report shares.
    static let style = """
        <style>body{font-family:sans-serif;margin:24px;max-width:1800px}
        table.m td,table.m th{border:1px solid #ccc;padding:4px 8px;text-align:right} table.m{border-collapse:collapse}
        .cams th{font-size:12px;text-align:left;vertical-align:top;width:150px} .cams td{padding:1px}
        .key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}</style>
        """

    /// A table of each named split's figures (splits without images left out).
    static func metricsTable(_ splits: [(String, SplitMetrics)]) -> String {
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let heads = ["split", "images", "accuracy", "loss", "sensitivity", "specificity", "precision", "F1", "ROC AUC"]
        let rows = splits.filter { $0.1.count > 0 }.map { n, m in
            "<tr><td>\(htmlEscape(n))</td><td>\(m.count)</td>"
                + [m.accuracy, m.loss, m.sensitivity, m.specificity, m.precision, m.f1, m.auc].map { "<td>\(f($0))</td>" }.joined()
                + "</tr>"
        }.joined()
        return "<table class=m><tr>\(heads.map { "<th>\($0)</th>" }.joined())</tr>\(rows)</table>"
    }

    /// The explained slices (`explanationRow`s) under their heading and column names.
    static func explanations(cams: [CAMKind], rows: [String], layer: String, of what: String) -> String {
        """
        <h2>Explanations on \(htmlEscape(what))</h2>
        <p>Fixed sample (same slices for every model on this data set) plus up to two slices this model gets wrong. Columns: the slice,
        |dL/dx| (input gradient, turbo), then each CAM at \(htmlEscape(layer)) over the slice (jet, red = high),
        explaining the predicted class.</p>
        <table class=cams><tr><th></th><th>input</th><th>input gradient</th>\(cams.map { "<th>\($0.rawValue)</th>" }.joined())</tr>
        \(rows.joined(separator: "\n"))</table>
        """
    }

    /// Intervals of the test figures and calibration, when the summary has them.
    static func evidenceSection(_ e: RunEvidence?, split: String = "test") -> String {
        guard let e else { return "" }
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let rows = BinaryFigures.names.map { name in
            let i = e.intervals[name]
            return "<tr><td>\(name)</td><td>\(f(e.figures[name]))</td><td>\(f(i?.lower ?? .nan)) to \(f(i?.upper ?? .nan))</td></tr>"
        }.joined()
        return """
        <h2>How sure (\(htmlEscape(split)))</h2>
        <table class=m><tr><th>figure</th><th>value</th><th>95 % interval (stratified bootstrap, \(e.resamples) resamples)</th></tr>\(rows)
        <tr><td>accuracy</td><td>\(f(e.figures.accuracy))</td>
        <td>\(f(e.accuracyExact.lower)) to \(f(e.accuracyExact.upper)) (Clopper-Pearson, exact)</td></tr>
        </table>
        <p>Calibration: expected calibration error (15 bins) \(f(e.ece)); with the temperature fitted on validation,
        T = \(String(format: "%.3f", e.temperature)), \(f(e.eceScaled)). The reliability diagram is with the plots below.</p>
        """
    }

    /// Test-time augmentation beside the plain figures.
    static func ttaSection(_ a: AugmentedEvaluation?) -> String {
        guard let a else { return "" }
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let i = a.evidence?.intervals["accuracy"]
        return """
        <h2>With test-time augmentation (\(a.method.rawValue): mean of the image's and its mirror's probabilities)</h2>
        <p>Test accuracy \(f(a.test.accuracy)) (95 % interval \(f(i?.lower ?? .nan)) to \(f(i?.upper ?? .nan))), loss \(f(a.test.loss)),
        ROC AUC \(f(a.test.auc)); validation accuracy \(f(a.val.accuracy)).</p>
        """
    }

    /// The clean test subset (no near-duplicate in train) and the 1-NN baseline.
    static func cleanSection(_ c: CleanSubset?) -> String {
        guard let c else { return "" }
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let i = c.intervals["accuracy"]
        return """
        <h2>Near-duplicates (disttrain audit)</h2>
        <p>\(c.testImages - c.images) of \(c.testImages) test images have a train image at NCC >= \(f(c.threshold)) (32x32 thumbnails,
        +-2 px). On the other \(c.images): accuracy \(f(c.figures.accuracy)) (95 % interval \(f(i?.lower ?? .nan)) to
        \(f(i?.upper ?? .nan))), ROC AUC \(f(c.figures.auc)). The 1-nearest-neighbour baseline (the nearest train image's label):
        \(f(c.nearestNeighbourAccuracy)) on all test images, \(f(c.nearestNeighbourCleanAccuracy)) on the clean ones.</p>
        """
    }

    /// Each method's localisation against lesion masks: energy inside against the mask's area share,
    /// their ratio, the pointing game and the pixel AUC, with intervals where measured; `what` says of which slices.
    static func localizationTable(_ l: [Localization]?, what: String? = nil) -> String {
        guard let l, !l.isEmpty else { return "" }
        func f(_ v: Double?) -> String { v.map { $0.isFinite ? String(format: "%.3f", $0) : "n/a" } ?? "n/a" }
        func cell(_ v: Double?, _ name: String, _ row: Localization) -> String {
            guard let i = row.intervals?[name] else { return "<td>\(f(v))</td>" }
            return "<td>\(f(v)) <small>(\(f(i.lower))-\(f(i.upper)))</small></td>"
        }
        let counts = Set(l.map(\.images)).sorted().map(String.init).joined(separator: "/")
        return "<h2>Localisation of the lesions (\(htmlEscape(what ?? "\(counts) positive test phantoms")))</h2>"
            + "<p>Over the slices with a non-empty mask: energy inside, the share of the map's sum inside the mask, against the mask's "
            + "share of the image (what a uniform map scores; chance), and their ratio; pointing game, the share of slices whose map "
            + "peaks inside; pixel AUC, the map as a per-pixel lesion detector (0.5 is chance). 95 % bootstrap intervals over slices "
            + "in brackets. Region \"lungs\": the same maps scored within each slice's lung mask only, against the lesions' share "
            + "of the lung field.</p>"
            + "<table class=m><tr><th>method</th><th>lesion</th><th>region</th><th>slices</th><th>energy inside</th><th>area share</th><th>ratio</th>"
            + "<th>pointing game</th><th>pixel AUC</th></tr>"
            + l.map { r in
                "<tr><td>\(htmlEscape(r.method))</td><td>\(htmlEscape(r.lesion ?? "lesion"))</td>"
                    + "<td>\(htmlEscape(r.region ?? "image"))</td><td>\(r.images)</td>"
                    + cell(r.energyInside, "energy_inside", r) + cell(r.chance, "area_share", r) + cell(r.ratio, "ratio", r)
                    + cell(r.pointingGame, "pointing_game", r) + cell(r.pixelAUC, "pixel_auc", r) + "</tr>"
            }.joined()
            + "</table>"
    }
}

extension ReportPage {
    /// Where the maps lie against each slice's lung mask, and the occlusion check (issue 27).
    static func lungSection(_ l: LungReport?) -> String {
        guard let l else { return "" }
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.3f", v) : "n/a" }
        let rows = l.energy.map {
            "<tr><td>\(htmlEscape($0.method))</td><td>\($0.images)</td><td>\(f($0.insideLungs))</td><td>\(f($0.lungArea))</td>"
                + "<td>\(f($0.lungArea > 0 ? $0.insideLungs / $0.lungArea : .nan))</td><td>\(f($0.bottomRows))</td>"
                + "<td>\(f($0.bottomArea > 0 ? $0.bottomRows / $0.bottomArea : .nan))</td>"
                + "<td>\(String(format: "%.1f", $0.seconds))</td></tr>"
        }.joined()
        var occlusion = ""
        if let o = l.occlusion {
            occlusion = """
            <p>Occlusion: everything outside each test slice's lung mask, dilated by \(o.dilation) px, replaced by the slice's darkest grey
            (\(o.occluded.count) slices; \(f(l.keptArea)) of the slice kept on the sample above),
            in \(String(format: "%.0f", l.occlusionSeconds)) s.</p>
            <table class=m><tr><th>test split</th><th>accuracy</th><th>sensitivity</th><th>specificity</th><th>ROC AUC</th></tr>
            \([("plain", o.plain), ("outside the lungs occluded", o.occluded)].map { n, m in
                "<tr><td>\(n)</td>" + [m.accuracy, m.sensitivity, m.specificity, m.auc].map { "<td>\(f($0))</td>" }.joined() + "</tr>"
            }.joined())</table>
            """
        }
        return """
        <h2>Where the network looks: the lungs</h2>
        <p>Lung masks from each slice's grey levels (Otsu's threshold, connected components, no learned model; LungMask.swift) on
        \(l.slices) test slices, \(htmlEscape(l.sample)); \(l.emptyMasks) with no lung found. Energy: share of the map's sum inside the
        mask, against the mask's area share (what a uniform map scores); bottom rows: the share in the lowest
        \(Int((LungEnergy.bottomFraction * 100).rounded())) % of the rows, below the lungs. CAMs explain the predicted class, the input
        gradient the true class. \(String(format: "%.0f", l.energySeconds)) s.</p>
        <table class=m><tr><th>method</th><th>slices</th><th>energy in lungs</th><th>lung area</th><th>ratio</th>
        <th>energy in bottom rows</th><th>ratio to their area</th><th>seconds</th></tr>\(rows)</table>
        \(occlusion)
        """
    }
}

/// The one escaping helper for text in HTML (element content and attributes in either quotes).
func htmlEscape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        .replacingOccurrences(of: "\"", with: "&quot;").replacingOccurrences(of: "'", with: "&#39;")
}
