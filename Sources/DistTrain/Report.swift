import Cams
import Foundation
import Net

/// The evaluation and explanation stage (`disttrain eval`, and the end of
/// `train`): metrics of a checkpoint on val and test (sharded), then on rank 0
/// curves, ROC, confusion matrix, conv1 kernels, input gradients and every
/// CAM method on a fixed sample of test slices: report/{*.png, summary.json, index.html}.
public struct EvalStage {
    public static let sampleSeed: UInt64 = 1234

    /// Test positions shown in every report of a data set: `perClass` of each
    /// class, chosen by a fixed seed (so two models are compared on the same slices).
    public static func fixedSample(_ ds: Dataset, perClass: Int = 3) -> [Int] {
        guard let test = ds.splits["test"] else { return [] }
        var order = Array(test.indices)
        var rng = Xoshiro256(seed: sampleSeed)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var picked: [Int] = []
        for k in 0..<max(ds.classNames.count, 2) {
            picked += order.filter { ds.labels[test[$0]] == k }.prefix(perClass)
        }
        return picked
    }

    /// Loads the checkpoint on every rank, evaluates, and (rank 0) writes the report.
    public static func run(trainer: Trainer, comm: Communicator, checkpoint: String, cams: [CAMKind] = CAMKind.allCases,
                           layer: String = "layer4") throws -> EvalSummary {
        if comm.isRoot { try Checkpoint.load(checkpoint, into: trainer.net) }
        try trainer.broadcastEverything()
        let (val, _, _) = try trainer.evaluateDetailed("val")
        let (test, labels, scores) = try trainer.evaluateDetailed("test")
        let summary = EvalSummary(checkpoint: checkpoint, val: val, test: test)
        guard comm.isRoot else { return summary }
        let dir = trainer.config.run + "/report"
        try FileManager.default.createDirectory(atPath: dir + "/cams", withIntermediateDirectories: true)
        try writeReport(trainer: trainer, dir: dir, summary: summary, labels: labels, scores: scores, cams: cams, layer: layer)
        return summary
    }

    static func writeReport(trainer: Trainer, dir: String, summary: EvalSummary, labels: [Int], scores: [Double], cams: [CAMKind],
                            layer: String) throws {
        let cfg = trainer.config, net = trainer.net, ds = trainer.dataset
        let t0 = now()
        // Curves from metrics.h5.
        let rows = MetricsLog.load(dir: cfg.run, upTo: Int.max).rows
        func curve(_ f: (EpochRow) -> Double) -> [(Double, Double)] { rows.map { (Double($0.epoch), f($0)) } }
        try linePlot([(curve(\.trainLoss), seriesColors["train"]!), (curve { $0.val.loss }, seriesColors["val"]!),
                      (curve { $0.test.loss }, seriesColors["test"]!)]).write(dir + "/loss.png")
        try linePlot([(curve(\.trainAccuracy), seriesColors["train"]!), (curve { $0.val.accuracy }, seriesColors["val"]!),
                      (curve { $0.test.accuracy }, seriesColors["test"]!)], yRange: (0.4, 1.0)).write(dir + "/accuracy.png")
        try linePlot([(rocCurve(labels: labels, scores: scores), (200, 30, 30)), ([(0, 0), (1, 1)], (160, 160, 160))],
                     width: 320, height: 320, yRange: (0, 1)).write(dir + "/roc.png")
        // conv1 kernels, 6x enlarged.
        let k = firstLayerKernels(net: net)
        let kh = k.height, kw = k.width
        var rgb = [UInt8](repeating: 0, count: kh * kw * 3)
        for i in 0..<(kh * kw) { for c in 0..<3 { rgb[3 * i + c] = UInt8(k.pixels[min(c, k.channels - 1) * kh * kw + i] * 255 + 0.5) } }
        try Image(width: kw * 6, height: kh * 6, channels: 3, pixels: enlarge(rgb, width: kw, height: kh, by: 6)).writePNG(dir + "/kernels.png")
        // Explanations on the fixed sample (+ up to 2 misclassified slices of this model).
        let test = ds.splits["test"] ?? []
        var sample = fixedSample(ds)
        let wrong = test.indices.filter { (scores[$0] >= 0.5 ? 1 : 0) != labels[$0] }.prefix(2)
        sample += wrong.filter { !sample.contains($0) }
        let explainer = try CAMExplainer(net: net, layer: layer)
        let S = cfg.imageSize
        var rowsHTML: [String] = []
        var camGrid: [[UInt8]] = []
        let gridTile = min(S, 96)
        for pos in sample {
            let x = Tensor()
            let lab = try trainer.batchMaker.batch(ds, [test[pos]], into: x, seed: cfg.seed, augmentEpoch: nil)
            // The slice as the network sees it, back in [0, 1] for display.
            let m = Float(cfg.mean.first ?? 0), s = Float(cfg.std.first ?? 1)
            let gray = (0..<(S * S)).map { x[$0] * s + m }
            let grad = inputGradient(net: net, x: x, labels: lab)
            var g = (0..<(S * S)).map { i in (0..<x.shape[1]).map { abs(grad[$0 * S * S + i]) }.max()! }
            let gmax = g.max() ?? 1
            g = g.map { min($0 / (gmax * 0.5 + 1e-12), 1) }  // saturate the top half for visibility
            var cells = [colorize(gray, colormap: .gray), colorize(g, colormap: .turbo)]
            for kind in cams { cells.append(overlay(gray: gray, cam: explainer.explain(x, method: kind).maps)) }
            let name = "test-\(pos)"
            for (j, cell) in cells.enumerated() {
                let col = j == 0 ? "input" : j == 1 ? "input-gradient" : cams[j - 2].rawValue
                try Image(width: S, height: S, channels: 3, pixels: cell).writePNG("\(dir)/cams/\(name)-\(col).png")
            }
            // The grid is the figure people page through (docs/results): tiles of at most 96 px keep it small.
            camGrid += cells.map { Image(width: S, height: S, channels: 3, pixels: $0).resized(width: gridTile, height: gridTile).pixels }
            let p = scores[pos]
            let truth = cfg.classNames.indices.contains(lab[0]) ? cfg.classNames[lab[0]] : "\(lab[0])"
            let pred = p >= 0.5 ? (cfg.classNames.count > 1 ? cfg.classNames[1] : "1") : (cfg.classNames.first ?? "0")
            rowsHTML.append("<tr><th>\(htmlEscape(ds.count > 0 ? (try ds.filenames()[test[pos]]) : name))<br>true \(truth)<br>p(\(cfg.classNames.last ?? "1")) = \(String(format: "%.3f", p))<br>\(pred == truth ? "correct" : "<b>wrong</b>")</th>"
                + (["input", "input-gradient"] + cams.map(\.rawValue)).map { "<td><img src=\"cams/\(name)-\($0).png\" width=\"\(min(S, 160))\"></td>" }.joined() + "</tr>")
        }
        let columns = 2 + cams.count
        if !camGrid.isEmpty {
            try grid(camGrid, tileWidth: gridTile, tileHeight: gridTile, columns: columns).write(dir + "/cam-grid.png")
        }
        // Localisation against lesion masks, where the data set has them (phantoms).
        var localization: [Localization] = []
        let source = (try? ds.file.stringAttribute("source")) ?? nil
        if let src = source, FileManager.default.fileExists(atPath: src + "/masks") {
            let names = try ds.filenames()
            let positives = Array(test.indices.filter { labels[$0] == 1 }.prefix(12))
            var maps = [String: [[Float]]](), masks: [[UInt8]] = []
            for pos in positives {
                guard let m = try? Image.read(src + "/masks/" + names[test[pos]]).converted(channels: 1).resized(width: S, height: S) else { continue }
                masks.append(m.pixels)
                let x = Tensor()
                _ = try trainer.batchMaker.batch(ds, [test[pos]], into: x, seed: cfg.seed, augmentEpoch: nil)
                for kind in cams { maps[kind.rawValue, default: []].append(explainer.explain(x, method: kind, target: .classIndex(1)).maps) }
            }
            if !masks.isEmpty { localization = cams.map { Localization.score(method: $0.rawValue, maps: maps[$0.rawValue]!, masks: masks) } }
        }
        // summary.json and index.html.
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var full = summary
        full.run = cfg.run; full.method = cfg.method.rawValue; full.arch = cfg.arch.rawValue; full.imageSize = cfg.imageSize
        full.bestEpoch = rows.min { $0.val.loss < $1.val.loss }?.epoch ?? 0
        full.epochs = rows.count
        full.wallSeconds = rows.reduce(0) { $0 + $1.seconds }
        full.imagesPerSecond = rows.isEmpty ? 0 : rows.reduce(0) { $0 + $1.imagesPerSecond } / Double(rows.count)
        full.peakRSSMiB = rows.map(\.peakRSSMiB).filter(\.isFinite).max()
        full.classNames = cfg.classNames
        full.camLayer = layer
        full.localization = localization.isEmpty ? nil : localization
        try enc.encode(full).write(to: URL(fileURLWithPath: dir + "/summary.json"))
        try htmlPage(full, cams: cams, rows: rowsHTML).write(toFile: dir + "/index.html", atomically: true, encoding: .utf8)
        print(String(format: "report: %@/index.html (%.0f s)", dir, now() - t0))
    }

    static func htmlPage(_ s: EvalSummary, cams: [CAMKind], rows: [String]) -> String {
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.4f", v) : "n/a" }
        let metricRows = [("val", s.val), ("test", s.test)].filter { $0.1.count > 0 }.map { n, m in
            "<tr><td>\(n)</td><td>\(m.count)</td><td>\(f(m.accuracy))</td><td>\(f(m.loss))</td><td>\(f(m.sensitivity))</td><td>\(f(m.specificity))</td><td>\(f(m.precision))</td><td>\(f(m.f1))</td><td>\(f(m.auc))</td></tr>"
        }.joined()
        let names = s.classNames ?? ["0", "1"]
        var confusion = "<table class=m><tr><th>true \\ predicted</th>" + names.map { "<th>\(htmlEscape($0))</th>" }.joined() + "</tr>"
        for (i, row) in s.test.confusion.enumerated() {
            confusion += "<tr><th>\(htmlEscape(names.indices.contains(i) ? names[i] : "\(i)"))</th>" + row.map { "<td>\($0)</td>" }.joined() + "</tr>"
        }
        confusion += "</table>"
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain report: \(htmlEscape(s.run ?? ""))</title>
        <style>body{font-family:sans-serif;margin:24px;max-width:1800px} table.m td,table.m th{border:1px solid #ccc;padding:4px 8px;text-align:right}
        table.m{border-collapse:collapse} .cams th{font-size:12px;text-align:left;vertical-align:top;width:150px} .cams td{padding:1px}
        .key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}</style></head><body>
        <h1>\(htmlEscape(s.method ?? "")) \(htmlEscape(s.arch ?? "")), \(s.imageSize ?? 0)x\(s.imageSize ?? 0)</h1>
        <p>Run <code>\(htmlEscape(s.run ?? ""))</code>, checkpoint <code>\(htmlEscape(s.checkpoint))</code>; best epoch (validation loss) \(s.bestEpoch ?? 0) of \(s.epochs ?? 0);
        training wall-clock \(formatDuration(s.wallSeconds ?? 0)), mean \(String(format: "%.1f", s.imagesPerSecond ?? 0)) img/s\(s.peakRSSMiB.map { String(format: ", peak RSS %.0f MiB per rank", $0) } ?? "").</p>
        <h2>Metrics of the checkpoint</h2>
        <table class=m><tr><th>split</th><th>images</th><th>accuracy</th><th>loss</th><th>sensitivity</th><th>specificity</th><th>precision</th><th>F1</th><th>ROC AUC</th></tr>\(metricRows)</table>
        <h3>Confusion matrix (test)</h3>\(confusion)
        <h2>Curves per epoch</h2>
        <p class=key><span style="background:#1f77b4"></span>train<span style="background:#ff7f0e"></span>val<span style="background:#2ca02c"></span>test
        (x: epoch 1 to \(s.epochs ?? 0); loss from 0, accuracy from 0.4 to 1)</p>
        <p><img src="loss.png" alt="loss"> <img src="accuracy.png" alt="accuracy"> <img src="roc.png" alt="ROC curve (test): false positive rate vs true positive rate"></p>
        <h2>First-layer kernels</h2><p>conv1, one tile per output channel; gray = 0, white positive, black negative, one scale for all.</p>
        <p><img src="kernels.png" alt="conv1 kernels"></p>
        \(localizationTable(s.localization))
        <h2>Explanations on test slices</h2>
        <p>Fixed sample (same slices for every model on this data set) plus up to two slices this model gets wrong. Columns: the slice,
        |dL/dx| (input gradient, turbo), then each CAM at \(s.camLayer ?? "layer4") over the slice (jet, red = high), explaining the predicted class.</p>
        <table class=cams><tr><th></th><th>input</th><th>input gradient</th>\(cams.map { "<th>\($0.rawValue)</th>" }.joined())</tr>
        \(rows.joined(separator: "\n"))</table></body></html>
        """
    }
}

func localizationTable(_ l: [Localization]?) -> String {
    guard let l, let first = l.first else { return "" }
    return "<h2>Localisation of the lesions (\(first.images) positive test phantoms)</h2><p>Pointing game: share of slices whose map peaks inside the lesion mask; "
        + "energy: share of the map inside the mask (a uniform map scores the mask's area, \(String(format: "%.3f", first.chance))).</p>"
        + "<table class=m><tr><th>method</th><th>pointing game</th><th>energy inside</th></tr>"
        + l.map { String(format: "<tr><td>%@</td><td>%.3f</td><td>%.3f</td></tr>", $0.method, $0.pointingGame, $0.energyInside) }.joined()
        + "</table>"
}

func htmlEscape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
}

public struct EvalSummary: Codable {
    public var checkpoint: String
    public var val: SplitMetrics
    public var test: SplitMetrics
    public var run: String?, method: String?, arch: String?
    public var imageSize: Int?, bestEpoch: Int?, epochs: Int?
    public var wallSeconds: Double?, imagesPerSecond: Double?
    /// Peak RSS of the largest rank during training, MiB.
    public var peakRSSMiB: Double?
    public var classNames: [String]?
    public var localization: [Localization]?
    public var camLayer: String?

    public init(checkpoint: String, val: SplitMetrics, test: SplitMetrics) {
        self.checkpoint = checkpoint; self.val = val; self.test = test
    }
}
