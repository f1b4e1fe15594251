import Cams
import Foundation
import Net

/// The pictures of a report, one function per figure; each writes its PNG
/// files into `dir` (a new figure is one more function here and one line in
/// `EvalStage.writeReport`).
enum ReportFigures {
    /// A plot drawn both ways: `svg` for index.html, `canvas` for `<name>.png`.
    struct Figure {
        var name: String
        var svg: String
        var canvas: Canvas
    }

    /// Loss, accuracy and learning rate per epoch (best epoch marked), and where
    /// there are test predictions the ROC (AUC in the title), the reliability
    /// diagram (ECE) and the confusion matrix.
    static func plots(_ rows: [EpochRow], bestEpoch: Int, labels: [Int], scores: [Double], test: SplitMetrics, classNames: [String],
                      evidence: RunEvidence?) -> [Figure] {
        curves(rows, bestEpoch: bestEpoch)
            + outcomes(labels: labels, scores: scores, metrics: test, classNames: classNames,
                       reliability: evidence.map { ($0.reliability, $0.ece) }, split: "test")
    }

    /// A plot drawn both ways.
    static func figure(_ name: String, _ p: Plot) -> Figure { Figure(name: name, svg: p.svg, canvas: p.canvas) }

    /// Loss, accuracy and learning rate per epoch, the best epoch marked.
    static func curves(_ rows: [EpochRow], bestEpoch: Int) -> [Figure] {
        func curve(_ f: (EpochRow) -> Double) -> [(Double, Double)] { rows.map { (Double($0.epoch), f($0)) } }
        func perSplit(_ train: (EpochRow) -> Double, _ eval: (SplitMetrics) -> Double) -> [Plot.Series] {
            [Plot.Series(name: "train", color: .train, points: curve(train)),
             Plot.Series(name: "val", color: .val, points: curve { eval($0.val) }),
             Plot.Series(name: "test", color: .test, points: curve { eval($0.test) })]
        }
        let best = bestEpoch > 0 ? (x: Double(bestEpoch), label: "best epoch \(bestEpoch)") : nil
        return [
            figure("loss", Plot(title: "Loss per epoch", xLabel: "epoch", yLabel: "cross-entropy",
                                series: perSplit({ $0.trainLoss }, { $0.loss }), marker: best)),
            figure("accuracy", Plot(title: "Accuracy per epoch", xLabel: "epoch", yLabel: "accuracy",
                                    series: perSplit({ $0.trainAccuracy }, { $0.accuracy }), yRange: (0.4, 1), marker: best)),
            figure("lr", Plot(title: "Learning rate (peak group)", xLabel: "epoch", yLabel: "learning rate",
                              series: [Plot.Series(name: "lr at the epoch's end", color: .train, points: curve(\.lr))], marker: best)),
        ]
    }

    /// The figures of one split's predictions: the ROC (AUC in the title) where both classes are
    /// present, the reliability diagram (ECE) when given, and the confusion matrix; `split` names
    /// the split in the titles.
    static func outcomes(labels: [Int], scores: [Double], metrics test: SplitMetrics, classNames: [String],
                         reliability: (bins: [Calibration.Bin], ece: Double)?, split: String) -> [Figure] {
        var out: [Figure] = []
        if Set(labels).count == 2 {
            out.append(figure("roc", Plot(title: String(format: "ROC (%@), AUC %.4f", split, test.auc), xLabel: "false positive rate",
                                          yLabel: "true positive rate",
                                          series: [Plot.Series(name: "model", color: .model, points: rocCurve(labels: labels, scores: scores)),
                                                   Plot.Series(name: "chance", color: .reference, points: [(0, 0), (1, 1)])],
                                          xRange: (0, 1), yRange: (0, 1), width: 360, height: 340)))
        }
        if let e = reliability {
            let pts = e.bins.filter { $0.count > 0 }.map { ($0.meanConfidence, $0.accuracy) }
            out.append(figure("reliability", Plot(title: String(format: "Reliability (%@), ECE %.4f", split, e.ece), xLabel: "confidence",
                                                  yLabel: "accuracy in the bin",
                                                  series: [Plot.Series(name: "model", color: .model, points: pts),
                                                           Plot.Series(name: "perfect calibration", color: .reference,
                                                                       points: [(0.5, 0.5), (1, 1)])],
                                                  xRange: (0.5, 1), yRange: (0, 1), width: 360, height: 340)))
        }
        if !test.confusion.isEmpty {
            let c = ConfusionPlot(title: String(format: "Confusion matrix (%@), accuracy %.4f", split, test.accuracy), classNames: classNames,
                                  counts: test.confusion)
            out.append(Figure(name: "confusion", svg: c.svg, canvas: c.canvas))
        }
        return out
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
    /// each, under a header of column names; left of each row its file, true
    /// and predicted label and probability (`rowLabels`, one line each).
    static func camGrid(_ rows: [[[UInt8]]], rowLabels: [[String]], columns: [String], size S: Int, dir: String) throws {
        guard let first = rows.first else { return }
        let tile = min(S, 96), gap = 4, header = BitmapFont.height + 8
        // Columns as wide as their longest name (up to 14 characters), tiles centred in them.
        let column = max(tile, min(columns.map { Canvas.textWidth($0) }.max() ?? 0, 14 * BitmapFont.width) + 4)
        let chars = 20, labelWidth = chars * BitmapFont.width + 8
        var c = Canvas(width: labelWidth + first.count * (column + gap) + gap, height: header + rows.count * (tile + gap) + gap)
        func fit(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 3)) + "..." }
        for (k, name) in columns.enumerated() {
            c.text(fit(name, column / BitmapFont.width), x: labelWidth + gap + k * (column + gap) + column / 2, y: 4, anchor: .middle,
                   bold: true)
        }
        for (r, cells) in rows.enumerated() {
            let y = header + gap + r * (tile + gap)
            for (line, text) in (rowLabels.indices.contains(r) ? rowLabels[r] : []).enumerated() {
                c.text(fit(text, chars), x: 4, y: y + 2 + line * (BitmapFont.height + 2))
            }
            for (k, cell) in cells.enumerated() {
                let t = RasterImage(width: S, height: S, channels: 3, pixels: cell).resized(width: tile, height: tile).pixels
                c.paste(t, width: tile, height: tile, at: labelWidth + gap + k * (column + gap) + (column - tile) / 2, y)
            }
        }
        try c.write(dir + "/cam-grid.png")
    }
}
