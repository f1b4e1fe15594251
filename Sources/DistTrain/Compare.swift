import ArgumentParser
import Cams
import Foundation
import Net

/// `disttrain report RUN_A RUN_B ...`: the comparison the mission asks for.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare runs (e.g. scratch vs transfer): Markdown, CSV and an HTML page with both models' CAMs on the same slices.",
        discussion: "Reads each run's report/summary.json (run `disttrain eval RUN` first) and metrics.csv.")

    @Argument(help: "Run folders, each evaluated with `disttrain eval`.") var runs: [String]
    @Option(help: "Output folder (default: the parent of the first run, as comparison/).") var out: String?

    func validate() throws { guard !runs.isEmpty else { throw ValidationError("give at least one run folder") } }

    func run() throws {
        var summaries: [EvalSummary] = []
        for r in runs {
            let path = r + "/report/summary.json"
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RuntimeError("no '\(path)': run `disttrain eval \(r)` first")
            }
            let dec = JSONDecoder()
            dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            summaries.append(try dec.decode(EvalSummary.self, from: data))
        }
        let dir = out ?? (((runs[0] as NSString).deletingLastPathComponent as NSString).appendingPathComponent("comparison"))
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let table = Comparison(summaries: summaries, runs: runs)
        try table.markdown.write(toFile: dir + "/comparison.md", atomically: true, encoding: .utf8)
        try table.csv.write(toFile: dir + "/comparison.csv", atomically: true, encoding: .utf8)
        try table.html(relativeTo: dir).write(toFile: dir + "/index.html", atomically: true, encoding: .utf8)
        print(table.markdown)
        print("wrote \(dir)/comparison.md, comparison.csv, index.html")
    }
}

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
        guard let scratch = summaries.first(where: { $0.method == "scratch" }), let transfer = summaries.first(where: { $0.method == "transfer" }) else {
            return ""
        }
        let d = transfer.test.accuracy - scratch.test.accuracy
        let n = Double(max(transfer.test.count, 1))
        // One test image is 1/n; differences within ~2 images are noise on this split.
        let word = abs(d) * n <= 2 ? "no measurable difference" : d > 0 ? "transfer helped" : "transfer did not help"
        return String(format: "Does transfer help? %@: test accuracy %.2f %% (transfer) vs %.2f %% (scratch), %+.2f points (%+.0f of %d test images); best epochs %d vs %d.",
                      word, 100 * transfer.test.accuracy, 100 * scratch.test.accuracy, 100 * d, d * n, transfer.test.count,
                      transfer.bestEpoch ?? 0, scratch.bestEpoch ?? 0)
    }

    var markdown: String {
        var s = "| " + Comparison.columns.joined(separator: " | ") + " |\n|" + Comparison.columns.map { _ in "---" }.joined(separator: "|") + "|\n"
        for x in summaries { s += "| " + cells(x).joined(separator: " | ") + " |\n" }
        if !verdict.isEmpty { s += "\n" + verdict + "\n" }
        return s
    }

    var csv: String {
        ([Comparison.columns.joined(separator: ",")] + summaries.map { cells($0).joined(separator: ",") }).joined(separator: "\n") + "\n"
    }

    func html(relativeTo dir: String) -> String {
        let head = "<tr>" + Comparison.columns.map { "<th>\($0)</th>" }.joined() + "</tr>"
        let body = summaries.map { "<tr>" + cells($0).map { "<td>\($0)</td>" }.joined() + "</tr>" }.joined()
        // Both models' CAMs on the same fixed slices (the first rows of each cam-grid).
        let pictures = zip(runs, summaries).map { r, s in
            let rel = relativePath(from: dir, to: r + "/report")
            return "<h3>\(htmlEscape(s.method ?? r)) (\(htmlEscape(r)))</h3><p><a href=\"\(rel)/index.html\">full report</a></p>"
                + "<p><img src=\"\(rel)/cam-grid.png\" style=\"max-width:100%\"></p>"
        }.joined()
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain: comparison</title>
        <style>body{font-family:sans-serif;margin:24px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right} table{border-collapse:collapse}</style>
        </head><body><h1>Scratch vs transfer</h1><table>\(head)\(body)</table><p>\(htmlEscape(verdict))</p>
        <h2>CAMs on the same test slices</h2><p>Rows: the fixed sample of test slices (then each model's own mistakes);
        columns: slice, input gradient, \(CAMKind.allCases.map(\.rawValue).joined(separator: ", ")).</p>\(pictures)</body></html>
        """
    }
}

func relativePath(from dir: String, to target: String) -> String {
    let a = URL(fileURLWithPath: dir).standardizedFileURL.pathComponents, b = URL(fileURLWithPath: target).standardizedFileURL.pathComponents
    var i = 0
    while i < min(a.count, b.count) && a[i] == b[i] { i += 1 }
    return (Array(repeating: "..", count: a.count - i) + b[i...]).joined(separator: "/")
}

/// `disttrain predict IMG... --run RUN --out DIR --cams all`.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Probability and CAM overlays for new images, with a run's best checkpoint.",
        discussion: "Writes DIR/predictions.csv (file, p_<positive class>, predicted class), DIR/cams.h5 (one float32 [N, H, W] dataset per method, values in [0, 1], plus filenames) and one overlay PNG per image and method.")

    @Argument(help: "PNG or JPEG images.") var images: [String]
    @Option(name: .customLong("run"), help: "Run folder.") var runDir: String
    @Option(help: "Output folder.") var out: String = "predictions"
    @Option(help: "CAM methods: all, none, or a comma-separated list.") var cams: String = "all"
    @Option(help: "Checkpoint file inside ckpt/.") var checkpoint: String = "best.h5"
    @OptionGroup var threading: ThreadOptions

    func validate() throws { guard !images.isEmpty else { throw ValidationError("give at least one image") } }

    func run() throws {
        let kinds = cams == "none" ? [] : try parseCAMs(cams)
        _ = threading.apply()
        let cfg = try TrainConfig.load(runDir + "/config.json")
        let net = ResNet(cfg.netConfig)
        try Checkpoint.load("\(runDir)/ckpt/\(checkpoint)", into: net)
        net.setTraining(false)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let S = cfg.imageSize
        let maker = BatchMaker(channels: 1, height: S, width: S, size: S, mean: cfg.mean, std: cfg.std, outChannels: cfg.inChannels)
        let explainer = try CAMExplainer(net: net)
        var csv = "file,p_\((cfg.classNames.last ?? "1").lowercased()),predicted\n"
        var maps = [String: [Float]]()
        for path in images {
            let img = try Image.read(path).converted(channels: 1).resized(width: S, height: S)
            let x = Tensor([1, cfg.inChannels, S, S])
            img.pixels.withUnsafeBufferPointer { maker.fill(x, slot: 0, bytes: $0.baseAddress!, aug: .identity) }
            let p = softmax(net.forward(x))[0]
            let k = p.indices.max { p[$0] < p[$1] }!
            csv += "\"\(path.replacingOccurrences(of: "\"", with: "\"\""))\",\(String(format: "%.6f", p.last!)),\(cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)")\n"
            let gray = img.pixels.map { Float($0) / 255 }
            let stem = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            for kind in kinds {
                let m = explainer.explain(x, method: kind).maps
                maps[kind.rawValue, default: []] += m
                try Image(width: S, height: S, channels: 3, pixels: overlay(gray: gray, cam: m)).writePNG("\(out)/\(stem)-\(kind.rawValue).png")
            }
        }
        try csv.write(toFile: out + "/predictions.csv", atomically: true, encoding: .utf8)
        let f = try HDF5File(out + "/cams.h5", .create)
        for (name, v) in maps { try f.write(name, shape: [images.count, S, S], floats: v) }
        try f.writeStrings("filenames", images)
        print("wrote \(out)/predictions.csv, \(out)/cams.h5 and \(images.count * kinds.count) overlays")
    }
}
