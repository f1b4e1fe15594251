@testable import DistTrain
import Foundation
import Net
import XCTest

/// The commands that load a run (predict, eval, export) on a run folder that
/// was tampered with (issue 25, sections 2 and 3): each ends in exit 1 (64 for
/// an option) with one line naming the file or option, quickly, writing
/// nothing wrong; and predict computes in the run's precision.
final class HostileRunTests: XCTestCase {
    /// One tiny trained fp32 run for the whole class; `freshRun()` hands each test a copy to damage.
    nonisolated(unsafe) static var made: (run: String, data: String)?

    static func source() throws -> (run: String, data: String) {
        if let m = made { return m }
        let run = makeTempDir("hostile-run")
        let data = preparedSyntheticSet("hostile-run-data", train: 8, val: 2, test: 4)
        let r = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        made = (run, data)
        return (run, data)
    }

    /// A fresh copy of the tiny run.
    func freshRun() throws -> String {
        let copy = makeTempDir("hostile-copy") + "/run"
        try FileManager.default.copyItem(atPath: try HostileRunTests.source().run, toPath: copy)
        return copy
    }

    /// The test images of the tiny run's data set, as files predict reads.
    func testImages() throws -> [String] {
        let data = try HostileRunTests.source().data
        let ds = try Dataset(path: data)
        let names = try ds.filenames()
        return ds[split: .test].map { (data as NSString).deletingLastPathComponent + "/" + names[$0] }
    }

    /// config.json of `run` with `edit` applied to its keys.
    func editConfig(_ run: String, _ edit: (inout [String: Any]) -> Void) throws {
        let path = run + "/config.json"
        var c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        edit(&c)
        try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: path))
    }

    /// Exit 1 (or `status`), one error line holding every word, within `seconds`.
    func assertRefused(_ args: [String], status: Int32 = 1, seconds: Double = 30, env: [String: String] = [:], _ words: String...,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runCommand([disttrainBinary] + args, timeout: 120, env: env)
        XCTAssertEqual(r.status, status, "\(args): \(r.output)", file: file, line: line)
        for w in words { XCTAssertTrue(r.output.contains(w), "'\(w)' not in: \(r.output)", file: file, line: line) }
        let errors = r.output.split(separator: "\n").filter { $0.contains("rror") }
        XCTAssertEqual(errors.count, 1, "one error line: \(r.output)", file: file, line: line)
        XCTAssertLessThan(r.seconds, seconds, "\(args)", file: file, line: line)
    }

    /// file -> p of the last class, from predict's predictions.csv or eval's report/predictions.csv (test rows).
    func probabilities(_ path: String, eval: Bool) throws -> [String: Double] {
        var out: [String: Double] = [:]
        for r in try CSV.parse(String(contentsOfFile: path, encoding: .utf8), path: path).dropFirst() {
            if eval {
                guard r.fields[0] == "test" else { continue }
                out[r.fields[2]] = Double(r.fields[4])
            } else {
                out[r.fields[0]] = Double(r.fields[1])
            }
        }
        return out
    }

    // MARK: section 2: predict in the run's precision

    /// On a bf16 run, predict's probabilities are eval's (to the 6 decimals predict
    /// prints), and they are not the fp32 network's (which predict computed before).
    func testPredictComputesABF16RunInBF16AsEvalDoes() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        let run = makeTempDir("bf16-run") + "/run", data = try HostileRunTests.source().data
        let t = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval", "--precision", "bf16"], timeout: 120)
        XCTAssertEqual(t.status, 0, t.output)
        // Batches of one image in eval as in predict: the same GEMM shapes, so the same sums on any
        // kernel (batches of 4 gave the same digits on Zen 4; predict and eval differed by <= 4.5e-7).
        try editConfig(run) { $0["evalBatchSize"] = 1 }
        let e = try runCommand([disttrainBinary, "eval", run, "--cams", "none", "--threads", "1"], timeout: 120)
        XCTAssertEqual(e.status, 0, e.output)
        let evaluated = try probabilities(run + "/report/predictions.csv", eval: true)
        let images = try testImages()
        let root = (data as NSString).deletingLastPathComponent + "/"
        func predict(_ out: String) throws -> [String: Double] {
            let p = try runCommand([disttrainBinary, "predict"] + images + ["--run", run, "--out", out, "--cams", "gradcam", "--threads", "1"],
                                   timeout: 120)
            XCTAssertEqual(p.status, 0, p.output)
            return try probabilities(out + "/predictions.csv", eval: false)
        }
        let bf16 = try predict(run + "/pred-bf16")
        XCTAssertEqual(bf16.count, images.count)
        for image in images {
            let p = try XCTUnwrap(bf16[image]), q = try XCTUnwrap(evaluated[String(image.dropFirst(root.count))], image)
            XCTAssertEqual(p, q, accuracy: 1e-6, "\(image): predict \(p), eval \(q)")
        }
        // The same run computed in fp32 gives other probabilities: the comparison above can fail.
        try editConfig(run) { $0["precision"] = "fp32" }
        let fp32 = try predict(run + "/pred-fp32")
        let gap = images.map { abs((fp32[$0] ?? 0) - (bf16[$0] ?? 0)) }.max() ?? 0
        XCTAssertGreaterThan(gap, 5e-6, "fp32 and bf16 probabilities should differ (1.4e-3 measured)")
    }

    // MARK: section 3

    /// A config.json describing another (or a huge) network is refused before it is built.
    func testAConfigThatIsNotTheCheckpointsIsRefusedBeforeTheNetworkIsBuilt() throws {
        let run = try freshRun(), image = try testImages()[0]
        let commands = [["predict", image, "--run", run, "--out", run + "/pred"], ["eval", run, "--cams", "none"],
                        ["export", run, "--onnx", run + "/m.onnx"]]
        try editConfig(run) { $0["width"] = 1024 }
        for args in commands { try assertRefused(args, run + "/config.json", "--width must be in 1...256") }
        // Within the range, but not the checkpoint's (4): a 460 MB network, never allocated.
        try editConfig(run) { $0["width"] = 200 }
        for args in commands { try assertRefused(args, seconds: 10, run + "/config.json", "says width 200", run + "/ckpt/best.h5", "width 4") }
        try editConfig(run) { $0["width"] = 4; $0["arch"] = "resnet50" }
        for args in commands { try assertRefused(args, "says arch resnet50", "written for resnet18", run + "/ckpt/best.h5") }
        try editConfig(run) { $0["arch"] = "resnet18"; $0["numClasses"] = 3; $0["classNames"] = ["a", "b", "c"] }
        try assertRefused(commands[0], "says numClasses 3", "num_classes 2")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/pred"), "predict wrote nothing")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/m.onnx"))
        // A checkpoint whose tensor declares another shape: named from its header, before anything is allocated.
        try editConfig(run) { $0["numClasses"] = 2; $0["classNames"] = ["NORMAL", "COVID"] }
        do {
            let f = try HDF5File(run + "/ckpt/best.h5", .readWrite)
            try f.write("model/layer1.0.conv1.weight", shape: [4, 4, 1, 1], floats: [Float](repeating: 0, count: 16))
            try f.close()
        }
        try assertRefused(commands[2], run + "/ckpt/best.h5", "'layer1.0.conv1.weight' of shape [4, 4, 1, 1]", "needs [4, 4, 3, 3]")
        // The check itself allocates nothing of the network it is told of.
        var big = try TrainConfig.load(run + "/config.json")
        big.width = 256
        let t0 = Date()
        XCTAssertThrowsError(try RunModel.check(run + "/ckpt/best.h5", config: big, configPath: "c.json")) { e in
            XCTAssertTrue("\(e)".contains("says width 256"), "\(e)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2)
        XCTAssertEqual(RunModel.expectedShapes(big.netConfig).first { $0.0 == "fc.weight" }?.1, [2, 256 * 8])
        let shapes = RunModel.expectedShapes(ResNetConfig(arch: .resnet50, inChannels: 3, numClasses: 5, width: 8))
        XCTAssertEqual(shapes.map(\.1), ResNet(ResNetConfig(arch: .resnet50, inChannels: 3, numClasses: 5, width: 8)).store.entries.map(\.shape))
    }

    /// --threads and its default OPENBLAS_NUM_THREADS are bounded (libgomp crashed on 100000).
    func testThreadCountsAreBounded() throws {
        let run = try freshRun(), image = try testImages()[0]
        try assertRefused(["predict", image, "--run", run, "--out", run + "/pred", "--threads", "100000"], status: 64,
                          "--threads must be in 1...\(ThreadOptions.maxThreads)")
        try assertRefused(["eval", run, "--threads", "0"], status: 64, "--threads must be in 1...")
        try assertRefused(["eval", run], status: 64, env: ["OPENBLAS_NUM_THREADS": "100000"], "OPENBLAS_NUM_THREADS=100000", "at most")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/pred"))
        XCTAssertGreaterThanOrEqual(ThreadOptions.maxThreads, 256)
    }

    /// Normalisation that overflows is refused in config.json; weights that overflow
    /// (3e38, finite) are refused by predict and eval, naming the image and checkpoint.
    func testOverflowingNormalisationAndWeightsEndInANamedError() throws {
        let run = try freshRun(), image = try testImages()[0]
        let predict = ["predict", image, "--run", run, "--out", run + "/pred", "--cams", "gradcam"], eval = ["eval", run, "--cams", "none"]
        for (key, value, words) in [("std", 1e-300, "std must be positive, at least 1e-6"), ("mean", 1e300, "mean must be in [-1, 2]"),
                                    ("mean", 123.675, "mean must be in [-1, 2]")] {
            let good = try Data(contentsOf: URL(fileURLWithPath: run + "/config.json"))
            try editConfig(run) { $0[key] = [value] }
            for args in [predict, eval] { try assertRefused(args, run + "/config.json", words) }
            try good.write(to: URL(fileURLWithPath: run + "/config.json"))
        }
        do {
            let f = try HDF5File(run + "/ckpt/best.h5", .readWrite)
            let w = try f.readFloats("model/conv1.weight")
            try f.write("model/conv1.weight", shape: w.shape, floats: [Float](repeating: 3e38, count: w.values.count))
            try f.close()
        }
        try assertRefused(predict, "'\(image)'", run + "/ckpt/best.h5", "non-finite probability", "nothing was written")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/pred"), "no predictions.csv with -nan, no overlays")
        try assertRefused(eval, run + "/ckpt/best.h5", "non-finite probabilities", "val image(s)", "nothing was written")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/report/predictions.csv"))
        // Calibration bins a NaN, an infinite or an out-of-range score without trapping.
        let bins = Calibration.bins(labels: [0, 1, 1, 0, 1], scores: [.nan, .infinity, 1e300, -1e300, 0.7])
        XCTAssertEqual(bins.map(\.count).reduce(0, +), 3, "the finite scores only")
        XCTAssertEqual(bins.last?.count, 2)
        XCTAssertTrue(Calibration.expectedCalibrationError(labels: [0, 1], scores: [.nan, 0.9]).isFinite)
    }

    /// a/x.png and b/x.png get overlays of their own, and the count printed is the files written.
    func testInputsWithTheSameNameGetOverlaysOfTheirOwn() throws {
        let run = try freshRun(), image = try testImages()[0], dir = makeTempDir("stems")
        for sub in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: image, toPath: dir + "/\(sub)/x.png")
        }
        try FileManager.default.copyItem(atPath: image, toPath: dir + "/a_x.png")
        let inputs = [dir + "/a/x.png", dir + "/b/x.png", dir + "/a_x.png", dir + "/a/x.png"]
        let r = try runCommand([disttrainBinary, "predict"] + inputs + ["--run", run, "--out", dir + "/out", "--cams", "gradcam,eigencam"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("and 8 overlays"), r.output)
        let overlays = try FileManager.default.contentsOfDirectory(atPath: dir + "/out").filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(overlays, ["a_x-eigencam.png", "a_x-gradcam.png", "a_x~2-eigencam.png", "a_x~2-gradcam.png",
                                  "a_x~3-eigencam.png", "a_x~3-gradcam.png", "b_x-eigencam.png", "b_x-gradcam.png"])
        // Stems: the fewest parent folders that tell the inputs apart.
        func stems(_ names: [String]) -> [String] {
            PredictInput.uniqueStems(names.map {
                PredictInput(name: $0, image: RasterImage(width: 1, height: 1, channels: 1, pixels: [0]), series: nil,
                             stem: PredictInput.stem(($0 as NSString).lastPathComponent, frame: nil))
            }).map(\.stem)
        }
        XCTAssertEqual(stems(["d/a/x.png", "d/b/x.png", "y.png"]), ["a_x", "b_x", "y"])
        XCTAssertEqual(stems(["p/a/x.png", "q/a/x.png"]), ["p_a_x", "q_a_x"])
        XCTAssertEqual(stems(["x.png", "./x.png", "a/x.png"]), ["x", "x~2", "a_x"])
    }

    /// Class names, file names and series with commas, quotes or newlines are one CSV field each.
    func testPredictAndEvalCSVsQuoteEveryField() throws {
        let run = try freshRun(), image = try testImages()[0], dir = makeTempDir("csv")
        try editConfig(run) { $0["classNames"] = ["NOR\"MAL", "CO,VID"] }
        let odd = dir + "/odd, \"name\".png"
        try FileManager.default.copyItem(atPath: image, toPath: odd)
        let p = try runCommand([disttrainBinary, "predict", odd, image, "--run", run, "--out", dir + "/pred", "--cams", "none"])
        XCTAssertEqual(p.status, 0, p.output)
        let rows = try CSV.read(dir + "/pred/predictions.csv")
        XCTAssertEqual(rows.map(\.fields.count), [3, 3, 3])
        XCTAssertEqual(rows[0].fields, ["file", "p_co,vid", "predicted"])
        XCTAssertEqual(rows[1].fields[0], odd)
        XCTAssertTrue(["NOR\"MAL", "CO,VID"].contains(rows[1].fields[2]), "\(rows[1].fields)")
        // series.csv: a NIfTI volume in a folder whose name needs quoting.
        let synth = try runCommand([disttrainBinary, "synth", "--format", "nifti", "--out", dir + "/nii", "--n", "10", "--size", "32",
                                    "--slices-per-patient", "2"])
        XCTAssertEqual(synth.status, 0, synth.output)
        let volume = try XCTUnwrap(try FileManager.default.subpathsOfDirectory(atPath: dir + "/nii").first { $0.hasSuffix(".nii.gz") })
        let folder = dir + "/ward \"9\", bed 2"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir + "/nii/" + volume, toPath: folder + "/v.nii.gz")
        let s = try runCommand([disttrainBinary, "predict", folder + "/v.nii.gz", "--run", run, "--out", dir + "/series", "--cams", "none",
                                "--window", "lung"])
        XCTAssertEqual(s.status, 0, s.output)
        let series = try CSV.read(dir + "/series/series.csv")
        XCTAssertEqual(series.map(\.fields.count), [5, 5], "\(series)")
        XCTAssertEqual(series[0].fields[2], "mean_p_co,vid")
        XCTAssertEqual(series[1].fields[0], folder + "/v.nii.gz")
        XCTAssertEqual(series[1].fields[1], "2")
        XCTAssertTrue(["NOR\"MAL", "CO,VID"].contains(series[1].fields[4]), "\(series[1].fields)")
        // eval's report/predictions.csv: the same columns, the header's class name quoted.
        let e = try runCommand([disttrainBinary, "eval", run, "--cams", "none", "--threads", "1"], timeout: 120)
        XCTAssertEqual(e.status, 0, e.output)
        let evaluated = try CSV.read(run + "/report/predictions.csv")
        XCTAssertEqual(evaluated[0].fields, ["split", "index", "file", "label", "p_co,vid"])
        XCTAssertTrue(evaluated.allSatisfy { $0.fields.count == 5 })
        XCTAssertTrue(try String(contentsOfFile: run + "/report/predictions.csv", encoding: .utf8).contains(",\"COVID/img ("),
                      "file names stay quoted, as eval wrote them before")
    }

    /// A durable write never replaces what is not a regular file (a FIFO, a device,
    /// a folder); through a link to a regular file it replaces that file, link kept.
    func testExportReplacesOnlyRegularFiles() throws {
        let run = try freshRun(), dir = makeTempDir("targets")
        XCTAssertEqual(mkfifo(dir + "/fifo.onnx", 0o644), 0)
        try assertRefused(["export", run, "--onnx", dir + "/fifo.onnx"], dir + "/fifo.onnx", "is a FIFO, not a regular file")
        var st = stat()
        XCTAssertEqual(lstat(dir + "/fifo.onnx", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO, "the FIFO is still there")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/fifo.onnx.tmp"))
        try FileManager.default.createDirectory(atPath: dir + "/folder.onnx", withIntermediateDirectories: true)
        try assertRefused(["export", run, "--onnx", dir + "/folder.onnx"], "is a folder, not a regular file")
        try FileManager.default.createSymbolicLink(atPath: dir + "/to-fifo.onnx", withDestinationPath: dir + "/fifo.onnx")
        try assertRefused(["export", run, "--onnx", dir + "/to-fifo.onnx"], "links to '\(dir)/fifo.onnx', which is a FIFO")
        try FileManager.default.createSymbolicLink(atPath: dir + "/dangling.onnx", withDestinationPath: dir + "/nowhere/x.onnx")
        try assertRefused(["export", run, "--onnx", dir + "/dangling.onnx"], "is a symbolic link that does not resolve")
        // A link to a regular file: the file is replaced, the link stays a link.
        try Data("old".utf8).write(to: URL(fileURLWithPath: dir + "/real.onnx"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.onnx", withDestinationPath: "real.onnx")
        let ok = try runCommand([disttrainBinary, "export", run, "--onnx", dir + "/link.onnx"])
        XCTAssertEqual(ok.status, 0, ok.output)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link.onnx"), "real.onnx")
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/real.onnx")).prefix(2)), [0x08, 0x08])
        // In process: the same refusal for every durable write (predictions.csv, config.json, checkpoints).
        XCTAssertThrowsError(try durableWrite(dir + "/fifo.onnx", data: Data("x".utf8))) { e in
            XCTAssertTrue("\(e)".contains("is a FIFO"), "\(e)")
        }
    }

    /// export records a DICOM/NIfTI run's HU window in the model's metadata.
    func testExportRecordsTheRunsWindow() throws {
        let run = try freshRun()
        try editConfig(run) { $0["window"] = "lung" }
        let r = try runCommand([disttrainBinary, "export", run, "--onnx", run + "/m.onnx"])
        XCTAssertEqual(r.status, 0, r.output)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: run + "/m.onnx")))
        // metadata_props entry (StringStringEntryProto): key = 1, value = 2, length-delimited.
        let entry: [UInt8] = [0x0a, 6] + Array("window".utf8) + [0x12, 4] + Array("lung".utf8)
        XCTAssertTrue(contains(bytes, entry), "metadata_props has window = lung")
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { i in haystack[i..<(i + needle.count)].elementsEqual(needle) }
    }
}
