@testable import DistTrain
import Cams
import Foundation
import Net
import XCTest

/// eval's report, report's comparison and predict's files, on a tiny phantom run.
final class ReportTests: XCTestCase {
    func testPhantomsHaveLesionsOnlyInPositivesInsideTheLungs() {
        let (neg, negMask) = Phantom.slice(size: 64, positive: false, seed: 3)
        let (pos, posMask) = Phantom.slice(size: 64, positive: true, seed: 3)
        XCTAssertEqual(negMask.filter { $0 > 0 }.count, 0)
        let lesion = posMask.indices.filter { posMask[$0] > 0 }
        XCTAssertGreaterThan(lesion.count, 10)
        // Ground glass is brighter than the lung it sits in.
        let meanIn = lesion.reduce(0.0) { $0 + Double(pos[$1]) } / Double(lesion.count)
        let meanNeg = lesion.reduce(0.0) { $0 + Double(neg[$1]) } / Double(lesion.count)
        XCTAssertGreaterThan(meanIn, meanNeg)
        XCTAssertEqual(Phantom.slice(size: 64, positive: true, seed: 3).image, pos, "deterministic by seed")
    }

    /// Results copied into docs/results keep metrics.csv only: curves still read, by column name.
    func testMetricsFallBackToCSV() throws {
        let dir = makeTempDir("csv-metrics")
        let text = "epoch,train_loss,val_accuracy,test_accuracy,lr\n1,0.9,0.5,0.55,0.02\n2,0.7,,0.75,0.01\n"
        try text.write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        let rows = try MetricsLog.rows(ofRun: dir)
        XCTAssertEqual(rows.map(\.epoch), [1, 2])
        XCTAssertEqual(rows.map(\.trainLoss), [0.9, 0.7])
        XCTAssertEqual(rows[0].val.accuracy, 0.5)
        XCTAssertTrue(rows[1].val.accuracy.isNaN, "an empty cell is NaN")
        XCTAssertEqual(rows.map(\.test.accuracy), [0.55, 0.75])
        XCTAssertTrue(rows[0].seconds.isNaN, "a missing column is NaN")
        XCTAssertTrue(try MetricsLog.rows(ofRun: makeTempDir("no-metrics")).isEmpty)
    }

    func testLocalizationScores() {
        let mask: [UInt8] = [0, 255, 0, 0]
        let l = Localization.score(method: "m", maps: [[0.1, 0.9, 0, 0], [1, 0, 0, 0]], masks: [mask, mask])
        XCTAssertEqual(l.pointingGame, 0.5)
        XCTAssertEqual(l.energyInside, 0.45, accuracy: 1e-6)
        XCTAssertEqual(l.chance, 0.25)
    }

    func testEvalReportComparisonAndPredictOnAPhantomRun() throws {
        let root = makeTempDir("report")
        try Phantom.write(to: root + "/data", n: 40, size: 32, seed: 1)
        var runs: [String] = []
        for method in ["scratch", "scratch-b"] {
            var c = TrainConfig()
            c.data = root + "/data"; c.run = root + "/" + method; c.epochs = 2; c.batchSize = 8; c.imageSize = 32; c.width = 4
            c.evalBatchSize = 8; c.seed = method == "scratch" ? 1 : 2
            try startTraining(c, comm: SingleProcess(), debug: false)
            let cfg = try TrainConfig.load(c.run + "/config.json")
            let s = try EvalStage.run(config: cfg, comm: SingleProcess(), checkpoint: c.run + "/ckpt/best.h5",
                                      cams: [.gradcam, .hirescam, .eigencam, .ablationcam])
            XCTAssertEqual(s.test.count, 8)
            for f in ["index.html", "summary.json", "loss.png", "accuracy.png", "lr.png", "roc.png", "reliability.png", "confusion.png",
                      "kernels.png", "cam-grid.png"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: "\(c.run)/report/\(f)"), f)
            }
            let html = try String(contentsOfFile: c.run + "/report/index.html", encoding: .utf8)
            XCTAssertTrue(html.contains("Localisation of the lesions"), "phantoms have masks: localisation table expected")
            XCTAssertEqual(s.lungs?.energy.map(\.method), ["input-gradient", "gradcam", "hirescam", "eigencam", "ablationcam"])
            XCTAssertEqual(s.lungs?.occlusion?.occluded.count, 8)
            XCTAssertTrue(html.contains("Where the network looks"), "grey slices: the lung table expected")
            for src in html.components(separatedBy: "src=\"").dropFirst().map({ String($0.prefix { $0 != "\"" }) }) {
                XCTAssertTrue(FileManager.default.fileExists(atPath: "\(c.run)/report/\(src)"), "the page shows a missing picture \(src)")
            }
            runs.append(c.run)
        }
        let r = try runCommand([disttrainBinary, "report"] + runs + ["--out", root + "/cmp"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(try String(contentsOfFile: root + "/cmp/comparison.csv", encoding: .utf8).hasPrefix("method,arch,image size"))
        let page = try String(contentsOfFile: root + "/cmp/index.html", encoding: .utf8)
        XCTAssertTrue(page.contains("Validation accuracy per epoch") && page.contains(">scratch-b<"), "one curve per run, named by its folder")
        XCTAssertEqual(try RasterImage.read(root + "/cmp/val-accuracy.png").width, 480)
        // predict writes exactly the files DESIGN.md names.
        let names = try Dataset(path: try TrainConfig.load(runs[0] + "/config.json").dataset).filenames()
        let images = [root + "/data/" + names[0], root + "/data/" + names[1]]
        let p = try runCommand([disttrainBinary, "predict"] + images + ["--run", runs[0], "--out", root + "/pred", "--cams", "gradcam,eigencam"])
        XCTAssertEqual(p.status, 0, p.output)
        let csv = try String(contentsOfFile: root + "/pred/predictions.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv[0], "file,p_covid,predicted")
        XCTAssertEqual(csv.count, 3)
        let f = try HDF5File(root + "/pred/cams.h5")
        XCTAssertEqual(try f.shape("gradcam"), [2, 32, 32])
        let v = try f.readFloats("eigencam").values
        XCTAssertTrue(v.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertEqual(try f.readStrings("filenames"), images)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/pred/phantom-0-gradcam.png"))
    }
}
