import Cams
import Foundation
import Net

/// The pictures of a report, one function per figure; each writes its PNG
/// files into `dir` (a new figure is one more function here and one line in
/// `EvalStage.writeReport`).
enum ReportFigures {
    /// loss.png and accuracy.png: train, val and test per epoch (colours as `seriesColors`).
    static func curves(_ rows: [EpochRow], dir: String) throws {
        func curve(_ f: (EpochRow) -> Double) -> [(Double, Double)] { rows.map { (Double($0.epoch), f($0)) } }
        func perSplit(_ train: @escaping (EpochRow) -> Double, _ eval: @escaping (SplitMetrics) -> Double)
            -> [(points: [(Double, Double)], color: (UInt8, UInt8, UInt8))] {
            [(curve(train), seriesColors["train"]!), (curve { eval($0.val) }, seriesColors["val"]!),
             (curve { eval($0.test) }, seriesColors["test"]!)]
        }
        try linePlot(perSplit(\.trainLoss, \.loss)).write(dir + "/loss.png")
        try linePlot(perSplit(\.trainAccuracy, \.accuracy), yRange: (0.4, 1.0)).write(dir + "/accuracy.png")
    }

    /// The curves, ROC and reliability diagram as labelled inline SVG for index.html.
    static func svgPlots(_ rows: [EpochRow], bestEpoch: Int, labels: [Int], scores: [Double], auc: Double,
                         evidence: RunEvidence?) -> [String] {
        let colors = ["train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"]
        func curve(_ f: (EpochRow) -> Double) -> [(Double, Double)] { rows.map { (Double($0.epoch), f($0)) } }
        func perSplit(_ train: (EpochRow) -> Double, _ eval: (SplitMetrics) -> Double) -> [SVGPlot.Series] {
            [SVGPlot.Series(name: "train", color: colors["train"]!, points: curve(train)),
             SVGPlot.Series(name: "val", color: colors["val"]!, points: curve { eval($0.val) }),
             SVGPlot.Series(name: "test", color: colors["test"]!, points: curve { eval($0.test) })]
        }
        let best = bestEpoch > 0 ? (x: Double(bestEpoch), label: "best epoch \(bestEpoch)") : nil
        var plots = [
            SVGPlot(title: "Loss", xLabel: "epoch", yLabel: "cross-entropy", series: perSplit({ $0.trainLoss }, { $0.loss }),
                    marker: best).svg,
            SVGPlot(title: "Accuracy", xLabel: "epoch", yLabel: "accuracy", series: perSplit({ $0.trainAccuracy }, { $0.accuracy }),
                    yRange: (0.4, 1), marker: best).svg,
        ]
        if !labels.isEmpty {
            plots.append(SVGPlot(title: String(format: "ROC (test), AUC %.4f", auc), xLabel: "false positive rate",
                                 yLabel: "true positive rate",
                                 series: [SVGPlot.Series(name: "model", color: "#c81e1e", points: rocCurve(labels: labels, scores: scores)),
                                          SVGPlot.Series(name: "chance", color: "#a0a0a0", points: [(0, 0), (1, 1)])],
                                 xRange: (0, 1), yRange: (0, 1), width: 340).svg)
        }
        if let e = evidence {
            let pts = e.reliability.filter { $0.count > 0 }.map { ($0.meanConfidence, $0.accuracy) }
            plots.append(SVGPlot(title: String(format: "Reliability (test), ECE %.4f", e.ece), xLabel: "confidence", yLabel: "accuracy",
                                 series: [SVGPlot.Series(name: "model", color: "#c81e1e", points: pts),
                                          SVGPlot.Series(name: "calibrated", color: "#a0a0a0", points: [(0.5, 0.5), (1, 1)])],
                                 xRange: (0.5, 1), yRange: (0, 1), width: 340).svg)
        }
        return plots
    }

    /// roc.png: the test ROC curve against the diagonal.
    static func roc(labels: [Int], scores: [Double], dir: String) throws {
        try linePlot([(rocCurve(labels: labels, scores: scores), (200, 30, 30)), ([(0, 0), (1, 1)], (160, 160, 160))],
                     width: 320, height: 320, yRange: (0, 1)).write(dir + "/roc.png")
    }

    /// reliability.png: accuracy against mean confidence per non-empty bin (test),
    /// with the diagonal of perfect calibration; confidences run from 0.5 to 1.
    static func reliability(_ e: RunEvidence, dir: String) throws {
        let points = e.reliability.filter { $0.count > 0 }.map { ($0.meanConfidence, $0.accuracy) }
        try linePlot([(points, (200, 30, 30)), ([(0.5, 0.5), (1, 1)], (160, 160, 160))], width: 320, height: 320, yRange: (0.4, 1))
            .write(dir + "/reliability.png")
    }

    /// kernels.png: conv1's kernels, one tile per output channel, 6x enlarged.
    static func kernels(_ net: ResNet, dir: String) throws {
        let k = firstLayerKernels(net: net)
        let kh = k.height, kw = k.width
        var rgb = [UInt8](repeating: 0, count: kh * kw * 3)
        for i in 0..<(kh * kw) { for c in 0..<3 { rgb[3 * i + c] = byte(k.pixels[min(c, k.channels - 1) * kh * kw + i]) } }
        try RasterImage(width: kw * 6, height: kh * 6, channels: 3, pixels: enlarge(rgb, width: kw, height: kh, by: 6))
            .writePNG(dir + "/kernels.png")
    }

    /// One explained slice: the slice as the network sees it, |dL/dx|, and
    /// each CAM over the slice, as RGB tiles of size x size.
    static func explanationTiles(x: Tensor, labels: [Int], net: ResNet, explainer: CAMExplainer, cams: [CAMKind],
                                 mean: Float, std: Float) -> [[UInt8]] {
        let S = x.shape[2]
        let gray = (0..<(S * S)).map { x[$0] * std + mean }  // back in [0, 1] for display
        let grad = inputGradient(net: net, x: x, labels: labels)
        var g = (0..<(S * S)).map { i in (0..<x.shape[1]).map { abs(grad[$0 * S * S + i]) }.max()! }
        let gmax = g.max() ?? 1
        g = g.map { min($0 / (gmax * 0.5 + 1e-12), 1) }  // saturate the top half for visibility
        return [colorize(gray, colormap: .gray), colorize(g, colormap: .turbo)]
            + cams.map { overlay(gray: gray, cam: explainer.explain(x, method: $0).maps) }
    }

    /// cam-grid.png: the tiles of every explained slice in rows, at most 96 px
    /// each (the figure people page through in docs/results stays small).
    static func camGrid(_ rows: [[[UInt8]]], size S: Int, dir: String) throws {
        guard let first = rows.first else { return }
        let tile = min(S, 96)
        let tiles = rows.flatMap { $0 }.map {
            RasterImage(width: S, height: S, channels: 3, pixels: $0).resized(width: tile, height: tile).pixels
        }
        try grid(tiles, tileWidth: tile, tileHeight: tile, columns: first.count).write(dir + "/cam-grid.png")
    }
}
