@testable import DistTrain
import Foundation
import Net
import XCTest

/// The audit finds planted near-duplicates and passes clean pairs; eval writes
/// the evidence; report pairs the methods, groups the seeds and ensembles them.
final class EvidenceTests: XCTestCase {
    /// A 64x64 image of `blobs` smooth random Gaussian blobs (so two such images barely correlate).
    func blobImage(seed: UInt64, shift: (Int, Int) = (0, 0), gain: Double = 1, offset: Double = 0) -> [UInt8] {
        var rng = SplitMix(seed)
        let centres = (0..<6).map { _ in (Double(rng.next() % 48) + 8, Double(rng.next() % 48) + 8, Double(rng.next() % 5) + 4) }
        return (0..<(64 * 64)).map { i in
            let x = Double(i % 64 - shift.0), y = Double(i / 64 - shift.1)
            let v = centres.reduce(30.0) { $0 + 180 * exp(-((x - $1.0) * (x - $1.0) + (y - $1.1) * (y - $1.1)) / (2 * $1.2 * $1.2)) }
            return UInt8(max(0, min(255, v * gain + offset)))
        }
    }

    func testAuditFindsPlantedCopiesAndPassesCleanImages() throws {
        let dir = makeTempDir("audit")
        for cls in ["A", "B"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(cls)", withIntermediateDirectories: true) }
        var rows: [String: String] = ["train": "filename,label\n", "val": "filename,label\n", "test": "filename,label\n"]
        func add(_ split: String, _ name: String, _ label: Int, _ px: [UInt8]) throws {
            try RasterImage(width: 64, height: 64, channels: 1, pixels: px).writePNG("\(dir)/\(name)")
            rows[split]! += "\(name),\(label)\n"
        }
        for s in 0..<12 { try add("train", "\(s % 2 == 0 ? "A" : "B")/train-\(s).png", s % 2, blobImage(seed: UInt64(s))) }
        // Planted: copies of train images shifted by 3 and 4 px with brightness and contrast changed; one byte-identical.
        try add("test", "A/copy-of-4.png", 0, blobImage(seed: 4, shift: (3, -2), gain: 1.15, offset: -12))
        try add("test", "B/copy-of-7.png", 1, blobImage(seed: 7, shift: (-4, 4), gain: 0.9, offset: 20))
        try add("val", "A/same-as-0.png", 0, blobImage(seed: 0))
        // Clean: images of their own.
        try add("test", "A/fresh-100.png", 0, blobImage(seed: 100))
        try add("test", "B/fresh-101.png", 1, blobImage(seed: 101))
        for (split, text) in rows { try text.write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8) }
        try DatasetSource.detect(dir).prepare(out: dir + "/data.h5")
        let ds = try Dataset(path: dir + "/data.h5")
        let names = try ds.filenames()
        let r = try Audit.run(ds)
        func match(_ file: String) -> Audit.Match { r.matches.first { names[$0.image] == file }! }
        XCTAssertEqual(match("A/same-as-0.png").score, 1, accuracy: 1e-5)
        for (copy, source) in [("A/copy-of-4.png", "A/train-4.png"), ("B/copy-of-7.png", "B/train-7.png")] {
            XCTAssertEqual(names[match(copy).nearest], source)
            XCTAssertGreaterThanOrEqual(match(copy).score, Audit.defaultThreshold, copy)
        }
        for fresh in ["A/fresh-100.png", "B/fresh-101.png"] { XCTAssertLessThan(match(fresh).score, 0.8, fresh) }
        XCTAssertEqual(r.duplicated(.test).count, 2)
        XCTAssertEqual(r.cleanPositions(.test).map { names[ds[split: .test][$0]] }.sorted(), ["A/fresh-100.png", "B/fresh-101.png"])
        // The command writes the CSV and the page.
        let out = dir + "/audit"
        let c = try runCommand([disttrainBinary, "audit", dir + "/data.h5", "--out", out])
        XCTAssertEqual(c.status, 0, c.output)
        XCTAssertTrue(c.output.contains("test: 2 of 4 images"), c.output)
        let csv = try String(contentsOfFile: out + "/audit.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 1 + 5)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/pairs/0-a.png"))
    }

    /// Fake evaluated runs (summary.json + predictions.csv) of two scratch seeds
    /// and one transfer run on the same 100 test images.
    func testReportPairsMethodsGroupsSeedsAndEnsembles() throws {
        let root = makeTempDir("evidence-report")
        let labels = (0..<100).map { $0 % 2 }
        func run(_ name: String, method: String, wrong: Set<Int>) throws -> String {
            let dir = "\(root)/\(name)"
            try FileManager.default.createDirectory(atPath: dir + "/report", withIntermediateDirectories: true)
            let scores = labels.enumerated().map { i, y in wrong.contains(i) ? (y == 1 ? 0.3 : 0.7) : (y == 1 ? 0.8 : 0.2) }
            var csv = "split,index,file,label,p_covid\n"
            for (i, (y, p)) in zip(labels, scores).enumerated() { csv += "test,\(i),\"img (\(i)).png\",\(y),\(p)\n" }
            try csv.write(toFile: dir + "/report/predictions.csv", atomically: true, encoding: .utf8)
            var s = EvalSummary(checkpoint: "best.h5", val: SplitMetrics(), test: SplitMetrics(lossSum: 10, labels: labels,
                                predictions: scores.map { $0 > 0.5 ? 1 : 0 }, scores: scores, classes: 2))
            s.method = method
            s.evidence = RunEvidence(testLabels: labels, testScores: scores, valLabels: [], valScores: [], resamples: 200)
            let enc = JSONEncoder()
            enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try enc.encode(s).write(to: URL(fileURLWithPath: dir + "/report/summary.json"))
            return dir
        }
        let a = try run("scratch-0", method: "scratch", wrong: Set(0..<12))
        let b = try run("scratch-1", method: "scratch", wrong: Set(6..<18))
        let t = try run("transfer", method: "transfer", wrong: [])
        let r = try runCommand([disttrainBinary, "report", a, b, t, "--out", root + "/cmp"])
        XCTAssertEqual(r.status, 0, r.output)
        let md = try String(contentsOfFile: root + "/cmp/comparison.md", encoding: .utf8)
        XCTAssertTrue(md.contains("Across seeds"), md)
        XCTAssertTrue(md.contains("transfer is better than scratch (ensemble of 2)"), md)
        XCTAssertTrue(md.contains("McNemar exact p"), md)
        // In process: the ensemble of the two scratch seeds is wrong where both are (6..<12, where both p = 0.3/0.7),
        // and where one is wrong the mean (0.55 / 0.45) is still right.
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let c = Comparison(summaries: try [a, b, t].map { try dec.decode(EvalSummary.self, from: Data(contentsOf:
                           URL(fileURLWithPath: $0 + "/report/summary.json"))) }, runs: [a, b, t],
                           predictions: try [a, b, t].map { try TestPredictions.load(run: $0) })
        let scratch = c.groups.first { $0.method == "scratch" }!
        XCTAssertEqual(scratch.members, [0, 1])
        XCTAssertEqual(scratch.ensembleEvidence!.figures.accuracy, 0.94, accuracy: 1e-12)
        XCTAssertEqual(scratch.accuracy.mean, 0.88, accuracy: 1e-12)
        let p = try XCTUnwrap(c.paired)
        XCTAssertEqual([p.onlyA, p.onlyB], [0, 6])
        XCTAssertEqual(p.mcnemarP, 2.0 / 64, accuracy: 1e-15)
        XCTAssertEqual(p.accuracyDifference, 0.06, accuracy: 1e-12)
        XCTAssertGreaterThan(p.accuracyInterval.lower, 0)
        XCTAssertEqual(try XCTUnwrap(scratch.meanAccuracy).mean, 0.88, accuracy: 1e-12)
        XCTAssertNil(c.seeds, "one transfer run: no seed pairs")

        // A second transfer seed, wrong on 4 images, listed with its images in another order: the seed pairs and the
        // difference of the means (transfer 0.98, scratch 0.88).
        let t2 = try run("transfer-1", method: "transfer", wrong: Set(40..<44))
        let lines = try String(contentsOfFile: t2 + "/report/predictions.csv", encoding: .utf8).split(separator: "\n")
        try ([lines[0]] + lines.dropFirst().reversed()).joined(separator: "\n").write(toFile: t2 + "/report/predictions.csv",
                                                                                      atomically: true, encoding: .utf8)
        let all = [a, t, b, t2]
        let c2 = Comparison(summaries: try all.map { try dec.decode(EvalSummary.self, from: Data(contentsOf:
                            URL(fileURLWithPath: $0 + "/report/summary.json"))) }, runs: all,
                            predictions: try all.map { try TestPredictions.load(run: $0) })
        let s2 = try XCTUnwrap(c2.seeds)
        XCTAssertEqual(s2.accuracy.difference, 0.98 - 0.88, accuracy: 1e-12)
        XCTAssertTrue(s2.accuracy.interval.lower > 0 && s2.accuracy.interval.contains(0.10), "\(s2.accuracy.interval)")
        XCTAssertEqual(s2.pairs.map { "\($0.test.nameB) vs \($0.test.nameA)" }, ["transfer vs scratch-0", "transfer-1 vs scratch-1"])
        XCTAssertEqual(s2.pairs.map { [$0.test.onlyA, $0.test.onlyB] }, [[0, 12], [4, 12]])
        XCTAssertEqual(s2.pairs[1].accuracyB, 0.96, accuracy: 1e-12)
        let mean = try XCTUnwrap(c2.groups.first { $0.method == "transfer" }?.meanAccuracy)
        XCTAssertEqual(mean.mean, 0.98, accuracy: 1e-12)
        XCTAssertTrue(mean.interval.contains(0.98), "\(mean.interval)")
        XCTAssertTrue(c2.markdown.contains("Mean over seeds: transfer +10.00 points"), c2.markdown)
        XCTAssertTrue(c2.markdown.contains("| transfer-1 vs scratch-1 | 0.8800 | 0.9600 | +8.00 points"), c2.markdown)
    }

    /// eval writes predictions.csv, the intervals, calibration and the clean subset.
    func testEvalWritesTheEvidence() throws {
        let run = makeTempDir("eval-evidence")
        let data = preparedSyntheticSet("evidence-data", train: 8, val: 4, test: 6)
        let t = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1"], timeout: 120)
        XCTAssertEqual(t.status, 0, t.output)
        let csv = try String(contentsOfFile: run + "/report/predictions.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 1 + 4 + 6)
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let s = try dec.decode(EvalSummary.self, from: Data(contentsOf: URL(fileURLWithPath: run + "/report/summary.json")))
        let e = try XCTUnwrap(s.evidence)
        XCTAssertEqual(e.figures.accuracy, s.test.accuracy, accuracy: 1e-12)
        XCTAssertTrue(e.accuracyExact.contains(s.test.accuracy))
        XCTAssertEqual(e.reliability.map(\.count).reduce(0, +), 6)
        let c = try XCTUnwrap(s.clean)
        XCTAssertEqual(c.testImages, 6)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/report/reliability.png"))
        let html = try String(contentsOfFile: run + "/report/index.html", encoding: .utf8)
        XCTAssertTrue(html.contains("How sure (test)") && html.contains("Near-duplicates"), html)
        // --tta flip: reported beside the plain figures.
        let e2 = try runCommand([disttrainBinary, "eval", run, "--cams", "gradcam", "--tta", "flip", "--threads", "1"], timeout: 120)
        XCTAssertEqual(e2.status, 0, e2.output)
        XCTAssertTrue(e2.output.contains("test with --tta flip"), e2.output)
        let s2 = try dec.decode(EvalSummary.self, from: Data(contentsOf: URL(fileURLWithPath: run + "/report/summary.json")))
        XCTAssertEqual(s2.tta?.method, .flip)
        XCTAssertEqual(s2.tta?.test.count, 6)
        XCTAssertEqual(s2.test.accuracy, s.test.accuracy, "the plain figures stay")
    }

    /// Flip TTA is the mean of the image's and its mirror's probabilities; a
    /// mirror-symmetric image gives the plain probabilities.
    func testFlipTTAAveragesTheMirror() {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4), engine: Engine(backend: .fromEnvironment()))
        net.initialize(seed: 3)
        net.setTraining(false)
        var rng = SplitMix(5)
        let W = 32
        let x = Tensor([2, 1, W, W]), mirror = Tensor([2, 1, W, W])
        for i in 0..<x.count { x.data[i] = Float(rng.next() % 1000) / 500 - 1 }
        for r in 0..<(2 * W) { for c in 0..<W { mirror.data[r * W + c] = x.data[r * W + W - 1 - c] } }
        let a = softmax(net.forward(x)), b = softmax(net.forward(mirror))
        let t = TestTimeAugmentation.flip.probabilities(net, x)
        for n in 0..<2 { for k in 0..<2 { XCTAssertEqual(t[n][k], (a[n][k] + b[n][k]) / 2, accuracy: 1e-6) } }
        XCTAssertNotEqual(t[0][0], a[0][0], "a random image is not its own mirror")
        for r in 0..<(2 * W) { for c in 0..<(W / 2) { x.data[r * W + W - 1 - c] = x.data[r * W + c] } }
        let sym = TestTimeAugmentation.flip.probabilities(net, x), plain = softmax(net.forward(x))
        for n in 0..<2 { for k in 0..<2 { XCTAssertEqual(sym[n][k], plain[n][k], accuracy: 1e-6) } }
    }
}

/// Patient-level splits from a CSV group column, and the audit's check that no group crosses splits.
final class GroupSplitTests: XCTestCase {
    func testSplitByGroupKeepsEveryPatientInOneSplitAndTheAuditSaysSo() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("groups"), train: 40, val: 4, test: 4, size: 16)
        // Each patient: 4 slices of one class; the random CSV splits put patients on both sides.
        var k = 0
        for split in ["train", "val", "test"] {
            let rows = try String(contentsOfFile: "\(dir)/\(split).csv", encoding: .utf8).split(separator: "\n").dropFirst()
            let text = rows.map { row -> String in
                defer { k += 1 }
                let label = row.hasSuffix("1.0") ? 1 : 0
                return "\(row),\(label)-p\(k / 8)"
            }
            try ("filename,label,group\n" + text.joined(separator: "\n") + "\n").write(toFile: "\(dir)/\(split).csv", atomically: true,
                                                                                     encoding: .utf8)
        }
        let before = try runCommand([disttrainBinary, "prepare", "--images", dir, "--out", dir + "/random.h5"])
        XCTAssertEqual(before.status, 0, before.output)
        let a1 = try runCommand([disttrainBinary, "audit", dir + "/random.h5", "--out", dir + "/audit-random", "--show", "0"])
        XCTAssertTrue(a1.output.contains("cross splits"), a1.output)
        let r = try runCommand([disttrainBinary, "prepare", "--images", dir, "--out", dir + "/grouped.h5", "--split-by", "group",
                                "--val", "0.2", "--test", "0.3", "--seed", "1"])
        XCTAssertEqual(r.status, 0, r.output)
        let ds = try Dataset(path: dir + "/grouped.h5")
        let groups = try XCTUnwrap(try ds.groups())
        var splitOf: [String: Set<Split>] = [:]
        for s in Split.allCases { for i in ds[split: s] { splitOf[groups[i], default: []].insert(s) } }
        XCTAssertEqual(splitOf.count, 12)
        XCTAssertTrue(splitOf.values.allSatisfy { $0.count == 1 }, "\(splitOf)")
        // Per class 6 patients of 4 slices: test takes 2 (>= 30 % of 24), val 2 (>= 20 %), train the other 2.
        XCTAssertEqual(Split.allCases.map { ds[split: $0].count }, [16, 16, 16])
        for s in Split.allCases { XCTAssertEqual(Set(ds[split: s].map { ds.labels[$0] }), [0, 1], "\(s) has both classes") }
        let csv = try String(contentsOfFile: dir + "/grouped-splits/test.csv", encoding: .utf8)
        XCTAssertTrue(csv.hasPrefix("filename,label,group\n"))
        XCTAssertEqual(csv.split(separator: "\n").count, 17)
        let a2 = try runCommand([disttrainBinary, "audit", dir + "/grouped.h5", "--out", dir + "/audit-grouped", "--show", "0"])
        XCTAssertTrue(a2.output.contains("groups: none crosses splits"), a2.output)
        // Without a group column, --split-by group is refused by name.
        let plain = try writeSyntheticCSVSet(makeTempDir("nogroups"), train: 4, val: 2, test: 2, size: 16)
        let n = try runCommand([disttrainBinary, "prepare", "--images", plain, "--out", plain + "/x.h5", "--split-by", "group"])
        XCTAssertEqual(n.status, 1, n.output)
        XCTAssertTrue(n.output.contains("needs a 'group' column"), n.output)
    }
}
