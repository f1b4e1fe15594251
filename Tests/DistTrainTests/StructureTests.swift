@testable import DistTrain
import Foundation
import Net
import XCTest

/// The pieces of the DistTrain redesign that hold behaviour together: one
/// config (defaults for what an older config.json lacks, one set of checks),
/// the training state in checkpoints, the one load-by-name with its checks,
/// and the one training step that bench and smoke run.
final class StructureTests: XCTestCase {
    func testOlderConfigJSONLoadsWithTheDefaultsForWhatItLacks() throws {
        let dir = makeTempDir("config")
        try #"{"method": "transfer", "epochs": 5, "adaptConv1": "replicate", "someFutureKey": 1}"#
            .write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        let c = try TrainConfig.load(dir + "/config.json")
        XCTAssertEqual(c.method, .transfer)
        XCTAssertEqual(c.epochs, 5)
        XCTAssertEqual(c.adaptConv1, .replicate)
        XCTAssertEqual(c.batchSize, TrainConfig().batchSize)
        XCTAssertEqual(c.lr, TrainConfig().lr)
        // Written and read by the same Codable: a round trip is the identity.
        try c.save(to: dir + "/again.json")
        XCTAssertEqual(try TrainConfig.load(dir + "/again.json"), c)
    }

    func testBadConfigValuesAreNamedWithFileAndOption() throws {
        let dir = makeTempDir("badconfig")
        try #"{"batchSize": 0}"#.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainConfig.load(dir + "/config.json")) {
            XCTAssertTrue("\($0)".contains("config.json") && "\($0)".contains("--batch-size"), "\($0)")
        }
        try #"{"adaptConv1": "average"}"#.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainConfig.load(dir + "/config.json")) {
            XCTAssertTrue("\($0)".contains("not a valid disttrain config"), "\($0)")
        }
        var c = TrainConfig()
        c.lr = .nan
        XCTAssertTrue(c.problems().contains { $0.contains("--lr") })
    }

    func testLearningRateScalingFollowsTheGlobalBatch() {
        var c = TrainConfig()
        c.lr = 0.1; c.referenceBatch = 32; c.batchSize = 128
        XCTAssertEqual(c.effectiveLR, 0.1)
        c.lrScaling = .linear
        XCTAssertEqual(c.effectiveLR, 0.4, accuracy: 1e-12)
        c.lrScaling = .sqrt
        XCTAssertEqual(c.effectiveLR, 0.2, accuracy: 1e-12)
    }

    func net() -> ResNet {
        let n = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4))
        n.initialize(seed: 7)
        return n
    }

    func testTrainStateRoundTripsThroughACheckpointAndReadsTheFirstRoundLayout() throws {
        let path = makeTempDir("state") + "/c.h5"
        let n = net()
        var st = TrainState()
        st.epoch = 4; st.step = 123; st.bestEpoch = 3; st.bestValAccuracy = 0.9833333333333333
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: st,
                            config: TrainConfig())
        XCTAssertEqual(try Checkpoint.load(path, into: net()), st, "infinity (no best loss yet) included")
        st.bestValLoss = 0.1928374651
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: st,
                            config: TrainConfig())
        XCTAssertEqual(try Checkpoint.load(path, into: net()), st)
        XCTAssertEqual(try HDF5File(path).readDoubles("state/best_val_loss").values, [0.1928374651], "one dataset per field, by name")
    }

    /// The first round stored the best validation loss and accuracy together as state/best.
    func testFirstRoundStateLayoutIsRead() throws {
        let path = makeTempDir("legacy") + "/c.h5"
        let n = net()
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: TrainState(),
                            config: TrainConfig())
        // Rewrite state/ as the first round wrote it.
        let legacy = makeTempDir("legacy2") + "/c.h5"
        do {
            let src = try HDF5File(path)
            let dst = try HDF5File(legacy, .create)
            for name in try src.members("model") where !name.hasSuffix("num_batches_tracked") {
                let (shape, v) = try src.readFloats("model/" + name)
                try dst.write("model/" + name, shape: shape, floats: v)
            }
            for name in try src.members("model") where name.hasSuffix("num_batches_tracked") {
                try dst.write("model/" + name, shape: [], int64s: [5], chunked: false)
            }
            try dst.write("state/epoch", shape: [1], int64s: [7])
            try dst.write("state/step", shape: [1], int64s: [70])
            try dst.write("state/best_epoch", shape: [1], int64s: [6])
            try dst.write("state/best", doubles: [0.5, 0.875])
            try dst.write("state/seed", shape: [1], int64s: [0])
            try dst.setAttribute("format_version", 1.0)
        }
        let st = try Checkpoint.load(legacy, into: net())
        XCTAssertEqual([st.epoch, st.step, st.bestEpoch], [7, 70, 6])
        XCTAssertEqual(st.bestValLoss, 0.5)
        XCTAssertEqual(st.bestValAccuracy, 0.875)
    }

    /// A short optimizer state used to be copied past its end; now it is named.
    func testOptimizerStateOfTheWrongShapeIsNamed() throws {
        let path = makeTempDir("optstate") + "/c.h5"
        let n = net()
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: TrainState(),
                            config: TrainConfig())
        do {
            let f = try HDF5File(path, .readWrite)
            try f.write("optimizer/layer1.0.conv1.weight/momentum_buffer", shape: [3], floats: [1, 2, 3])
        }
        let target = net()
        let optimizer = Optimizer(OptimizerConfig(kind: .sgd), store: target.store)
        XCTAssertThrowsError(try Checkpoint.load(path, into: target, optimizer: optimizer)) {
            XCTAssertTrue("\($0)".contains("layer1.0.conv1.weight/momentum_buffer") && "\($0)".contains("[3]"), "\($0)")
        }
    }

    /// One load routine: the same words for a checkpoint and an imported file.
    func testLoadByNameNamesTheSourceAndTheTensor() throws {
        let path = makeTempDir("byname") + "/c.h5"
        let n = net()
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: TrainState(),
                            config: TrainConfig())
        let wide = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 8))
        XCTAssertThrowsError(try Checkpoint.load(path, into: wide)) {
            XCTAssertTrue("\($0)".contains("checkpoint '\(path)'") && "\($0)".contains("'conv1.weight' has shape [4, 1, 7, 7]"), "\($0)")
        }
        var t: [String: ImportedTensor] = [:]
        for e in n.store.entries where e.kind != .counter {
            t[e.name] = ImportedTensor(shape: e.shape, values: n.store.read(e), dtype: "F32")
        }
        t["layer2.1.bn2.running_var"] = nil
        XCTAssertThrowsError(try WeightImporter.build(t, arch: nil, path: "x.pth")) {
            XCTAssertTrue("\($0)".contains("'x.pth' has no 'layer2.1.bn2.running_var'"), "\($0)")
        }
    }

    /// bench and smoke run the training's own step (through the binary).
    func testBenchAndSmokeRunTheTrainingStep() throws {
        guard FileManager.default.isExecutableFile(atPath: disttrainBinary) else { throw XCTSkip("build disttrain first") }
        let s = try runCommand([disttrainBinary, "smoke", "--image-size", "32", "--width", "4", "--batch-size", "4", "--steps", "8",
                                "--threads", "1"])
        XCTAssertEqual(s.status, 0, s.output)
        XCTAssertTrue(s.output.contains("loss ") && s.output.contains(" -> "), s.output)
        let b = try runCommand([disttrainBinary, "bench", "--image-size", "32", "--width", "4", "--batch-size", "4", "--steps", "2",
                                "--warmup", "1", "--threads", "1", "--json"])
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertTrue(b.output.contains("\"img_per_s\""), b.output)
    }
}

/// The report's plots, as inline SVG and as PNG with the bitmap font: round
/// ticks, labels, legend, marker, tooltips, escaped text.
final class PlotTests: XCTestCase {
    func testTicksAreRoundAndCoverTheRange() {
        XCTAssertEqual(Plot.ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1])
        XCTAssertEqual(Plot.ticks(1, 40), [10, 20, 30, 40])
        XCTAssertEqual(Plot.ticks(0.4, 1).first!, 0.4, accuracy: 1e-12)
    }

    func testPlotCarriesItsTextAndEscapesIt() {
        let p = Plot(title: "Loss <train>", xLabel: "epoch", yLabel: "cross-entropy",
                        series: [.init(name: "val", color: .val, points: [(1, 0.9), (2, 0.5), (3, .nan)])],
                        marker: (x: 2, label: "best epoch 2"))
        let svg = p.svg
        for text in ["Loss &lt;train&gt;", ">epoch<", ">cross-entropy<", ">val<", "best epoch 2", "<title>val: 2, 0.5000</title>"] {
            XCTAssertTrue(svg.contains(text), text)
        }
        XCTAssertEqual(svg.components(separatedBy: "<circle").count - 1, 2, "NaN points are left out")
    }

    func testBitmapTextDrawsTheFontsGlyphAtItsAnchorAndRotated() {
        let g = BitmapFont.glyphs[Int(UnicodeScalar("A").value) - 32]
        XCTAssertEqual(BitmapFont.glyphs.count, 95)
        XCTAssertGreaterThan(g.map { $0.nonzeroBitCount }.reduce(0, +), 10, "the font has an A")
        var h = Canvas(width: 40, height: 20), v = Canvas(width: 20, height: 40)
        h.text("A", x: 20, y: 2, color: .model, anchor: .middle)  // 7 px wide: starts 3 px left of 20
        v.text("A", x: 2, y: 30, color: .model, vertical: true)  // reads upwards from y = 30
        for row in 0..<BitmapFont.height {
            for col in 0..<8 {
                let on = g[row] & (0x80 >> UInt8(col)) != 0
                XCTAssertEqual(h.color(17 + col, 2 + row) == .model, on, "row \(row) col \(col)")
                XCTAssertEqual(v.color(2 + row, 30 - col) == .model, on, "rotated row \(row) col \(col)")
            }
        }
        var e = Canvas(width: 40, height: 20)
        e.text("é", x: 0, y: 0, color: .model)
        var q = Canvas(width: 40, height: 20)
        q.text("?", x: 0, y: 0, color: .model)
        XCTAssertEqual(e.pixels, q.pixels, "outside ASCII draws as ?")
    }

    func testPlotPNGHasTitleLegendTicksAndMarker() {
        let p = Plot(title: "Loss", xLabel: "epoch", yLabel: "cross-entropy",
                     series: [.init(name: "train", color: .train, points: [(1, 0.9), (2, 0.5), (3, 0.3)]),
                              .init(name: "val", color: .val, points: [(1, 1.0), (2, .nan), (3, 0.6)])],
                     marker: (x: 2, label: "best epoch 2"))
        let c = p.canvas, fr = p.frame
        func ink(_ x0: Int, _ x1: Int, _ y0: Int, _ y1: Int) -> Int {
            var n = 0
            for y in y0..<y1 { for x in x0..<x1 where c.color(x, y) == .axis { n += 1 } }
            return n
        }
        let titleWidth = Canvas.textWidth("Loss")
        XCTAssertGreaterThan(ink(p.width / 2 - titleWidth / 2, p.width / 2 + titleWidth / 2 + 1, 3, 16), 20, "title centred on top")
        XCTAssertEqual(ink(0, p.width / 2 - titleWidth / 2 - 2, 0, 18), 0, "nothing else on the title line")
        for (x, s) in p.legend(textWidth: { Double(Canvas.textWidth($0)) }) {
            XCTAssertEqual(c.color(Int(x) + 5, 28), s.color, "legend swatch of \(s.name)")
            XCTAssertGreaterThan(ink(Int(x) + 14, Int(x) + 14 + Canvas.textWidth(s.name), 21, 34), 10, "legend name \(s.name)")
        }
        for t in fr.yTicks {  // a label left of the axis at every tick
            let y = Int(fr.py(t).rounded())
            XCTAssertGreaterThan(ink(Int(Plot.Frame.left) - 5 - Canvas.textWidth(Plot.label(t)), Int(Plot.Frame.left) - 4, y - 6, y + 7),
                                 5, "tick \(t)")
        }
        let mx = Int(fr.px(2).rounded())
        XCTAssertEqual(c.color(mx, Int(Plot.Frame.top) + 1), .marker, "dashed marker line at the best epoch")
        XCTAssertGreaterThan((0..<p.width).filter { x in (0..<p.height).contains { c.color(x, $0) == .val } }.count, 50,
                             "val is drawn; its NaN point is left out, not drawn at a corner")
        XCTAssertNotEqual(c.color(Int(fr.px(2).rounded()), Int(fr.py(0).rounded()) - 1), .val)
    }

    func testConfusionPlotShowsCountsAndShares() {
        let p = ConfusionPlot(title: "Confusion", classNames: ["NORMAL", "COVID"], counts: [[9, 1], [0, 10]])
        XCTAssertTrue(p.svg.contains(">90.0 %<") && p.svg.contains(">10.0 %<") && p.svg.contains(">NORMAL<"), p.svg)
        XCTAssertTrue(p.svg.contains("<title>true NORMAL, predicted COVID: 1</title>"))
        let c = p.canvas
        let white = (0..<c.width).flatMap { x in (0..<c.height).map { c.color(x, $0) } }.filter { $0 == .white }.count
        XCTAssertLessThan(white, c.width * c.height, "something is drawn")
        XCTAssertTrue((0..<c.width).contains { x in (0..<c.height).contains { c.color(x, $0) == .cell } }, "a full row is the full shade")
    }
}
