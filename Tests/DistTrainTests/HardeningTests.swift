@testable import DistTrain
import Foundation
import Net
import XCTest

/// Hostile files, bad configurations and full disks end in a named error:
/// never a crash, a hang, memory in an output file, or a half file. One test
/// (or more) per class of input; each case is made here or by a committed script.
final class HardeningTests: XCTestCase {
    let fixtures = packageRoot + "/Tests/Fixtures/"

    // MARK: memory safety: safetensors offsets

    func testSafetensorsOffsetsOutsideTheBufferOverlapsAndHolesAreRefused() throws {
        let dir = makeTempDir("st")
        let f32 = { (name: String, shape: String, lo: Int, hi: Int) in
            "\"\(name)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(lo),\(hi)]}"
        }
        let cases: [(String, [UInt8], String)] = [
            ("negative", safetensors([f32("a", "[2]", -8, 0)], buffer: [UInt8](repeating: 1, count: 8)), "outside the buffer"),
            ("far-negative", safetensors([f32("a", "[2]", -1_000_000_000_000, -999_999_999_992)], buffer: [UInt8](repeating: 1, count: 8)),
             "outside the buffer"),
            ("overlap", safetensors([f32("a", "[2]", 0, 8), f32("b", "[1]", 4, 8)], buffer: [UInt8](repeating: 1, count: 8)), "overlap"),
            ("hole", safetensors([f32("a", "[1]", 0, 4), f32("b", "[1]", 8, 12)], buffer: [UInt8](repeating: 1, count: 12)), "hole"),
            ("trailing", safetensors([f32("a", "[1]", 0, 4)], buffer: [UInt8](repeating: 1, count: 12)), "after the last tensor"),
            ("wrong-length", safetensors([f32("a", "[3]", 0, 8)], buffer: [UInt8](repeating: 1, count: 8)), "bytes for 3"),
            ("huge-shape", safetensors([f32("a", "[1099511627776,1099511627776]", 0, 8)], buffer: [UInt8](repeating: 1, count: 8)),
             "declares shape"),
            ("header-past-end", safetensors([f32("a", "[2]", 0, 8)], buffer: [], declaredHeaderSize: 1 << 40), "does not fit"),
        ]
        for (name, bytes, words) in cases {
            let path = "\(dir)/\(name).safetensors"
            try write(bytes, to: path)
            assertError(try PyTorchImport.read(path), contains: path, words)
        }
        // Through the binary: exit 1, and no output file with whatever memory lay outside the file.
        let out = dir + "/out.h5"
        let r = try runCommand([disttrainBinary, "import-weights", dir + "/negative.safetensors", "--out", out])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    // MARK: crashes on small hostile weight files

    func testTorchFilesWithBadShapesStridesAndSizesAreRefused() throws {
        let dir = makeTempDir("pth")
        let cases: [(String, [UInt8], String)] = [
            // conv1 of width 1024 from 4 stored floats by stride 0: 150528 declared elements in a ~600-byte file.
            ("stride0",
             torchFile(Pickle.stateDict([("conv1.weight", Pickle.tensor(key: "0", shape: [1024, 3, 7, 7], stride: [0, 0, 0, 0]))])),
             "stride-0"),
            ("negative-shape", torchFile(Pickle.stateDict([("a", Pickle.tensor(key: "0", shape: [-1, 3], stride: [3, 1]))])),
             "declares shape"),
            ("overflow-shape", torchFile(Pickle.stateDict([("a", Pickle.tensor(key: "0", shape: [1 << 40, 1 << 40], stride: [1, 1]))])),
             "declares shape"),
            ("negative-stride", torchFile(Pickle.stateDict([("a", Pickle.tensor(key: "0", shape: [2], stride: [-1]))])), "bad view"),
            ("past-storage", torchFile(Pickle.stateDict([("a", Pickle.tensor(key: "0", offset: 2, shape: [4], stride: [1]))])),
             "past its storage"),
        ]
        for (name, bytes, words) in cases {
            let path = "\(dir)/\(name).pth"
            try write(bytes, to: path)
            assertError(try PyTorchImport.read(path), contains: path, words)
        }
        // The good counterpart reads: the builders make valid files.
        let good = dir + "/good.pth"
        try write(torchFile(Pickle.stateDict([("a", Pickle.tensor(key: "0", shape: [2, 2], stride: [2, 1]))])), to: good)
        XCTAssertEqual(try PyTorchImport.read(good)["a"]?.shape, [2, 2])
    }

    func testDeepOrSelfReferencingPicklesAreRefused() throws {
        let dir = makeTempDir("pickle")
        let deep = [0x80, 0x02] + [UInt8](repeating: 0x5D, count: 100_000) + [UInt8](repeating: 0x61, count: 99_999) + [0x2E]
        try write(torchFile(deep), to: dir + "/deep.pth")
        assertError(try PyTorchImport.read(dir + "/deep.pth"), contains: "nests deeper")
        // Growing a list after it was nested (through the memo): repeated, a chain whose stored depths stay at 2.
        // L0, memo 0, L1, memo 1, APPEND L1 to L0, LONG_BINGET L1, L2, APPEND L2 to L1: refused.
        try write(torchFile([0x80, 0x02, 0x5D, 0x94, 0x5D, 0x94, 0x61, 0x6A] + le32(1) + [0x5D, 0x61, 0x2E]), to: dir + "/grow.pth")
        assertError(try PyTorchImport.read(dir + "/grow.pth"), contains: "already nested")
        // d = {}; d["state_dict"] = d
        let cyclic: [UInt8] = [0x80, 0x02, 0x7D, 0x71, 0x00] + Pickle.str("state_dict") + [0x68, 0x00, 0x73, 0x2E]
        try write(torchFile(cyclic), to: dir + "/cyclic.pth")
        assertError(try PyTorchImport.read(dir + "/cyclic.pth"), contains: "self-referencing")
    }

    func testZipHeadersPastTheEndAreRefused() throws {
        let dir = makeTempDir("zip")
        let pickle = Pickle.stateDict([("a", Pickle.tensor(key: "0", shape: [2], stride: [1]))])
        for (name, size) in [("zip64-2^63", UInt64(1) << 63), ("zip64-minus256", UInt64(bitPattern: -256))] {
            try write(storedZip([("archive/data.pkl", pickle), ("archive/data/0", [UInt8](repeating: 0, count: 8))], zip64Size: size),
                      to: "\(dir)/\(name).pth")
            assertError(try PyTorchImport.read("\(dir)/\(name).pth"), contains: "past the end")
        }
        var cut = torchFile(pickle)
        cut.removeLast(30)  // the end of central directory record is gone
        try write(cut, to: dir + "/cut.pth")
        assertError(try PyTorchImport.read(dir + "/cut.pth"), contains: "cut.pth")
    }

    /// The architecture is checked against what the file holds before the network is allocated.
    func testAWeightFileCannotAskForAHugeNetwork() throws {
        var t: [String: ImportedTensor] = [:]
        t["conv1.weight"] = ImportedTensor(shape: [1024, 3, 7, 7], values: [Float](repeating: 0, count: 1024 * 3 * 49), dtype: "F32")
        t["fc.weight"] = ImportedTensor(shape: [2, 512 * 16], values: [Float](repeating: 0, count: 2 * 512 * 16), dtype: "F32")
        let t0 = Date()
        assertError(try WeightImporter.build(t, arch: nil, path: "big.pth"), contains: "width 1024", "the file holds")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        XCTAssertLessThan(peakRSSMiB(), 4096, "no multi-GB network was built")
    }

    // MARK: non-finite weights, hostile state

    func tinyRun() throws -> String {
        let run = makeTempDir("tinyrun")
        let data = preparedSyntheticSet("tiny-data", train: 8, val: 2, test: 2)
        let r = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        return run
    }

    func testNonFiniteWeightsAreNamedAndRenderingNeverTraps() throws {
        let run = try tinyRun()
        do {
            let f = try HDF5File(run + "/ckpt/best.h5", .readWrite)
            var w = try f.readFloats("model/layer1.0.conv1.weight")
            w.values[5] = .nan
            try f.write("model/layer1.0.conv1.weight", shape: w.shape, floats: w.values)
            try f.close()
        }
        let e = try runCommand([disttrainBinary, "eval", run, "--cams", "gradcam"], timeout: 60)
        XCTAssertEqual(e.status, 1, e.output)
        XCTAssertTrue(e.output.contains("layer1.0.conv1.weight") && e.output.contains("not finite"), e.output)
        // Rendering maps that hold NaN or infinities clips them.
        XCTAssertEqual(colorize([.nan, .infinity, -.infinity, 2, -1], colormap: .gray).count, 15)
        XCTAssertEqual(overlay(gray: [.nan, 0.5], cam: [0.5, .nan]).count, 6)
        XCTAssertEqual(byte(.nan), 0)
        XCTAssertEqual(byte(.infinity), 255)
    }

    func testHostileStateAndDeclaredShapesAreNamed() throws {
        let n = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4))
        let path = makeTempDir("state") + "/c.h5"
        try Checkpoint.save(path, net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store), state: TrainState(),
                            config: TrainConfig())
        do {
            let f = try HDF5File(path, .readWrite)
            try f.write("state/epoch", shape: [1], int64s: [-3])
            try f.close()
        }
        assertError(try Checkpoint.load(path, into: n), contains: path, "epoch -3")
        do {
            let f = try HDF5File(path, .readWrite)
            try f.write("state/epoch", shape: [0], int64s: [], chunked: false)
            try f.close()
        }
        assertError(try Checkpoint.load(path, into: n), contains: "state/epoch", "empty")
        let f = try HDF5File(path)
        assertError(try f.elementCount([1 << 40, 1 << 40], "x"), contains: "over the limit")
        assertError(try f.elementCount([-1], "x"), contains: "over the limit")
    }

    func testHostileDataSetFieldsAreNamed() throws {
        let good = preparedSyntheticSet("hostile-ds", train: 4, val: 2, test: 2)
        for (name, edit) in [("labels", { (f: HDF5File) in try f.write("labels", shape: [8], int64s: [0, 1, 0, 7, 0, 1, 0, 1]) }),
                             ("split/test", { (f: HDF5File) in try f.write("split/test", shape: [2], int64s: [6, 99]) }),
                             ("std", { (f: HDF5File) in try f.write("std", doubles: [0]) })] as [(String, (HDF5File) throws -> Void)] {
            let path = makeTempDir("ds") + "/data.h5"
            try FileManager.default.copyItem(atPath: good, toPath: path)
            let f = try HDF5File(path, .readWrite)
            try edit(f)
            try f.close()
            assertError(try Dataset(path: path), contains: path, name == "labels" ? "label 7" : name)
        }
    }

    // MARK: images

    func testHostileImagesAreRefusedBeforeDecoding() throws {
        let dir = makeTempDir("images")
        assertError(try RasterImage.read(fixtures + "huge-header.jpg"), contains: "30000x30000", "--max-pixels")
        assertError(try RasterImage.read(fixtures + "truncated.jpg"), contains: "truncated.jpg", "Premature end")
        XCTAssertEqual(try RasterImage.read(fixtures + "tiny.jpg").width, 16, "the good JPEG reads")
        try write(png(width: 1, height: 1, colorType: 0, pixels: [7], claim: (20000, 20000)), to: dir + "/huge.png")
        let t0 = Date()
        assertError(try RasterImage.read(dir + "/huge.png"), contains: "20000x20000")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2)
        try write(png(width: 4, height: 4, colorType: 0, pixels: [UInt8](repeating: 9, count: 16)), to: dir + "/small.png")
        XCTAssertEqual(try RasterImage.read(dir + "/small.png").pixels, [UInt8](repeating: 9, count: 16))
        assertError(try RasterImage.read(dir + "/small.png", maxPixels: 15), contains: "4x4")
        // A folder given as an image.
        try FileManager.default.createDirectory(atPath: dir + "/folder.png", withIntermediateDirectories: true)
        assertError(try RasterImage.read(dir + "/folder.png"), contains: "folder.png", "not a regular file")
        // Alpha is composited onto black: transparent reads 0, opaque keeps its colour.
        try write(png(width: 2, height: 1, colorType: 6, pixels: [200, 100, 50, 0, 200, 100, 50, 255]), to: dir + "/alpha.png")
        let a = try RasterImage.read(dir + "/alpha.png")
        XCTAssertEqual(a.channels, 3)
        XCTAssertEqual(a.pixels, [0, 0, 0, 200, 100, 50])
    }

    // MARK: configuration and options

    func testBadConfigFieldsEndQuicklyInANamedError() throws {
        let run = try tinyRun()
        let good = try String(contentsOfFile: run + "/config.json", encoding: .utf8)
        let cases: [(String, String, [String], String)] = [
            ("\"evalBatchSize\" : 32", "\"evalBatchSize\" : 0", ["eval", run], "evalBatchSize"),
            ("\"evalBatchSize\" : 32", "\"evalBatchSize\" : -1", ["eval", run], "evalBatchSize"),
            ("\"imageSize\" : 32", "\"imageSize\" : 0", ["predict", "x.png", "--run", run], "--image-size"),
            ("\"batchSize\" : 4", "\"batchSize\" : 0", ["resume", run], "--batch-size"),
            ("\"warmupEpochs\" : 1", "\"warmupEpochs\" : 1e300", ["resume", run], "--warmup-epochs"),
        ]
        for (from, to, args, words) in cases {
            XCTAssertTrue(good.contains(from), "config.json has no '\(from)':\n\(good)")
            try good.replacingOccurrences(of: from, with: to).write(toFile: run + "/config.json", atomically: true, encoding: .utf8)
            let r = try runCommand([disttrainBinary] + args, timeout: 30)
            XCTAssertEqual(r.status, 1, "\(to): \(r.output)")
            XCTAssertTrue(r.output.contains("config.json") && r.output.contains(words), "\(to): \(r.output)")
        }
        var c = try JSONSerialization.jsonObject(with: Data(good.utf8)) as! [String: Any]
        c["std"] = [0.0]
        try JSONSerialization.data(withJSONObject: c).write(to: URL(fileURLWithPath: run + "/config.json"))
        let s = try runCommand([disttrainBinary, "eval", run], timeout: 30)
        XCTAssertEqual(s.status, 1, s.output)
        XCTAssertTrue(s.output.contains("std must be positive"), s.output)
        try good.write(toFile: run + "/config.json", atomically: true, encoding: .utf8)
        // resume --epochs=-3 is refused, and config.json is left as it was.
        let r = try runCommand([disttrainBinary, "resume", run, "--epochs=-3"], timeout: 30)
        XCTAssertEqual(r.status, 64, r.output)
        XCTAssertEqual(try String(contentsOfFile: run + "/config.json", encoding: .utf8), good)
        for args in [["--image-size", "100000"], ["--width=-4"], ["--lr", "nan"], ["--warmup-epochs", "1e300"]] {
            let o = try runCommand([disttrainBinary] + args, timeout: 30)
            XCTAssertEqual(o.status, 64, "\(args): \(o.output)")
        }
    }

    func testBadLabelsAndPathsInCSVsAreNamed() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("labels"), train: 6, val: 2, test: 2, size: 16)
        let train = try String(contentsOfFile: dir + "/train.csv", encoding: .utf8)
        func prepare(_ csv: String, _ extra: [String] = []) throws -> CommandResult {
            try csv.write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
            return try runCommand([disttrainBinary, "prepare", "--images", dir, "--out", dir + "/out.h5"] + extra, timeout: 30)
        }
        let lines = train.split(separator: "\n").map(String.init)
        /// train.csv with the label of its first row replaced.
        func relabel(_ label: String) -> String {
            ([lines[0], lines[1].replacingOccurrences(of: ",0.0", with: ",\(label)")] + lines[2...]).joined(separator: "\n")
        }
        for (label, words) in [("1000000000", "bad label '1000000000'"), ("inf", "bad label 'inf'"), ("-1", "bad label '-1'")] {
            let r = try prepare(relabel(label))
            XCTAssertEqual(r.status, 1, r.output)
            XCTAssertTrue(r.output.contains("train.csv line 2: " + words), r.output)
            XCTAssertLessThan(r.seconds, 20)
        }
        // A typo: label 2 in a 0/1 set.
        let typo = try prepare(relabel("2"))
        XCTAssertEqual(typo.status, 1, typo.output)
        XCTAssertTrue(typo.output.contains("train.csv line 2") && typo.output.contains("typo"), typo.output)
        let declared = try prepare(relabel("2"), ["--classes", "3"])
        XCTAssertEqual(declared.status, 0, "--classes 3 asks for it: \(declared.output)")
        // One class only (in every split).
        for split in ["val", "test"] {
            let csv = try String(contentsOfFile: "\(dir)/\(split).csv", encoding: .utf8).split(separator: "\n")
            try (csv.filter { !$0.hasSuffix(",1.0") }.joined(separator: "\n") + "\n")
                .write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8)
        }
        let zeros = ([lines[0]] + lines[1...].filter { $0.hasSuffix(",0.0") }).joined(separator: "\n")
        let one = try prepare(zeros)
        XCTAssertEqual(one.status, 1, one.output)
        XCTAssertTrue(one.output.contains("one class"), one.output)
        // Paths that leave the data folder.
        XCTAssertEqual(try prepare(train).status, 0, "the set with its train.csv restored prepares")
        for bad in ["../outside.png", "/etc/passwd"] {
            let r = try prepare(([lines[0], "\(bad),0"] + lines[1...]).joined(separator: "\n"))
            XCTAssertEqual(r.status, 1, r.output)
            XCTAssertTrue(r.output.contains("leaves the data folder"), r.output)
        }
        try FileManager.default.createSymbolicLink(atPath: dir + "/NORMAL/link.png", withDestinationPath: "/etc/hostname")
        let link = try prepare(([lines[0], "NORMAL/link.png,0"] + lines[1...]).joined(separator: "\n"))
        XCTAssertEqual(link.status, 1, link.output)
        XCTAssertTrue(link.output.contains("resolves outside the data folder"), link.output)
    }

    // MARK: files on disk

    func testFullDiskLeavesNoHalfFileAndKeepsTheGoodOne() throws {
        guard let disk = mountTmpfs("full", size: "96k") else { throw XCTSkip("cannot mount a tmpfs here (needs root)") }
        defer { unmount(disk) }
        let src = try writeSyntheticCSVSet(makeTempDir("fullsrc"), train: 200, val: 2, test: 2, size: 32)
        let r = try runCommand([disttrainBinary, "prepare", "--images", src, "--out", disk + "/data.h5"], timeout: 60)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("No space left on device") && r.output.contains(disk), r.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: disk), [], "no data.h5, no data.h5.tmp")
        // A good file is not replaced by a failed write.
        try durableHDF5(disk + "/good.h5") { try $0.write("x", shape: [4], floats: [1, 2, 3, 4]) }
        let before = try Data(contentsOf: URL(fileURLWithPath: disk + "/good.h5"))
        let big = [Float](repeating: 1, count: 200_000)
        assertError(try durableHDF5(disk + "/good.h5") { try $0.write("x", shape: [big.count], floats: big) },
                    contains: "No space left on device")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: disk + "/good.h5")), before)
        XCTAssertFalse(FileManager.default.fileExists(atPath: disk + "/good.h5.tmp"))
    }

    func testARunFolderIsLockedWhileAProcessTrainsInIt() throws {
        let data = preparedSyntheticSet("lock-data", train: 8, val: 2, test: 2)
        let run = makeTempDir("locked")
        let fd = open(run + "/.lock", O_RDWR | O_CREAT, 0o644)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        _ = "4242\n".withCString { pwrite(fd, $0, 5, 0) }
        defer { close(fd) }
        try Data(repeating: 1, count: 10).write(to: URL(fileURLWithPath: run + "/metrics.csv.tmp"))
        let args = [disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                    "--width", "4", "--threads", "1", "--no-eval"]
        let r = try runCommand(args, timeout: 60)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("in use by process 4242"), r.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/config.json"), "the second run wrote nothing")
        flock(fd, LOCK_UN)
        let ok = try runCommand(args, timeout: 120)
        XCTAssertEqual(ok.status, 0, ok.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/metrics.csv.tmp"), "stale .tmp cleaned at start")
    }

    func testAReadOnlyRunFolderIsNoticedAtStart() throws {
        guard let ro = mountTmpfs("readonly", size: "64k", readOnly: true) else { throw XCTSkip("cannot mount a tmpfs here (needs root)") }
        defer { unmount(ro) }
        let data = preparedSyntheticSet("ro-data", train: 8, val: 2, test: 2)
        let r = try runCommand([disttrainBinary, "--data", data, "--run", ro + "/run", "--epochs", "1", "--batch-size", "4",
                                "--image-size", "32", "--width", "4", "--threads", "1"], timeout: 60)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("Read-only file system") && r.output.contains(ro + "/run"), r.output)
        XCTAssertFalse(r.output.contains("epoch 1/"), "refused before training")
    }

    // MARK: HTML

    func testEveryInterpolatedValueInThePagesIsEscaped() throws {
        let hostile = "<img src=x onerror=alert(1)>"
        var s = EvalSummary(checkpoint: "a\"b.h5", val: SplitMetrics(), test: SplitMetrics())
        s.run = "run\" onmouseover=\"x"; s.method = hostile; s.arch = hostile; s.classNames = [hostile, "b\"c"]; s.camLayer = hostile
        s.test.confusion = [[1, 0], [0, 1]]
        s.localization = [Localization(method: hostile, images: 1, pointingGame: 1, energyInside: 1, chance: 0.1)]
        let row = ReportPage.explanationRow(name: "test-0", file: hostile, truth: hostile, classLabel: "b\"c", probability: 0.5,
                                            correct: true, columns: ["input"], size: 32)
        let page = ReportPage.html(s, cams: [.gradcam], rows: [row])
        let table = Comparison(summaries: [s], runs: ["r\"><script>x</script>"]).html(relativeTo: "/tmp")
        for html in [page, table] {
            XCTAssertFalse(html.contains("<img src=x"), html)
            XCTAssertFalse(html.contains("<script>"), html)
            XCTAssertFalse(html.contains("\" onmouseover"), html)
        }
        XCTAssertTrue(page.contains("&lt;img src=x onerror=alert(1)&gt;"))
    }
}
