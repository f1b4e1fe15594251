import DistTrain
import Foundation
import Net
import XCTest

/// Single-process training through the Trainer API on a tiny synthetic set.
final class TrainingTests: XCTestCase {
    static var data: String = preparedSyntheticSet("train-data", train: 16, val: 4, test: 6)

    func config(_ run: String, epochs: Int = 3) -> TrainConfig {
        smallRunConfig(data: TrainingTests.data, run: run, epochs: epochs, seed: 3)
    }

    func modelAndOptimizer(_ path: String) throws -> [String: [Float]] { try checkpointTensors(path) }

    func testTrainWritesRunFolder() throws {
        let run = makeTempDir("run")
        try Trainer(config: config(run, epochs: 2), comm: SingleProcess()).run()
        for f in ["ckpt/epoch-0001.h5", "ckpt/epoch-0002.h5", "ckpt/last.h5", "ckpt/best.h5", "metrics.csv", "metrics.h5"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/" + f), f)
        }
        let csv = try String(contentsOfFile: run + "/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 3)
        XCTAssertTrue(csv[0].hasPrefix("epoch,train_loss,train_accuracy,val_loss"))
        XCTAssertTrue(csv[0].hasSuffix(",peak_rss_mib"))
        let rss = Double(csv[2].split(separator: ",").last.map(String.init) ?? "") ?? 0
        XCTAssertGreaterThan(rss, 10, "peak RSS of the process is logged, MiB")
        XCTAssertLessThan(rss, 64 * 1024)
        let f = try HDF5File(run + "/ckpt/last.h5")
        let net = ResNet(config(run).netConfig)
        XCTAssertEqual(try f.members("model").sorted(), net.store.entries.map(\.name).sorted())
        XCTAssertEqual(try f.stringAttribute("arch"), "resnet18")
        XCTAssertEqual(try f.readInt64s("state/epoch").values, [2])
        XCTAssertEqual(try f.readInt64s("model/bn1.num_batches_tracked").values, [4])  // 2 steps x 2 epochs
    }

    /// An interrupted and resumed run ends with the same bits as an uninterrupted one.
    func testResumeIsBitExact() throws {
        let a = makeTempDir("a"), b = makeTempDir("b")
        try Trainer(config: config(a), comm: SingleProcess()).run()
        var cb = config(b)
        cb.stopAfterEpochs = 1
        try Trainer(config: cb, comm: SingleProcess()).run()
        XCTAssertEqual(try HDF5File(b + "/ckpt/last.h5").readInt64s("state/epoch").values, [1])
        cb.stopAfterEpochs = 0
        try Trainer(config: cb, comm: SingleProcess(), resume: true).run()
        let ta = try modelAndOptimizer(a + "/ckpt/last.h5"), tb = try modelAndOptimizer(b + "/ckpt/last.h5")
        XCTAssertEqual(ta.count, tb.count)
        XCTAssertGreaterThan(ta.count, 100)
        for (k, v) in ta { XCTAssertEqual(v, tb[k], "\(k) differs after resume") }
        let ma = try String(contentsOfFile: a + "/metrics.csv", encoding: .utf8)
        let mb = try String(contentsOfFile: b + "/metrics.csv", encoding: .utf8)
        XCTAssertEqual(ma.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).prefix(17) }, mb.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).prefix(17) },
                       "same losses and metrics per epoch (timings aside)")
    }

    /// A bit-flipped or truncated last.h5 is named and resume falls back to the
    /// newest good epoch file; leftover *.tmp files of a killed writer are ignored.
    func testCorruptCheckpointFallsBack() throws {
        let run = makeTempDir("corrupt")
        var c = config(run)
        c.stopAfterEpochs = 2
        try Trainer(config: c, comm: SingleProcess()).run()
        let last = run + "/ckpt/last.h5"
        XCTAssertThrowsError(try HDF5File(last + ".none"))
        // Flip a region in the middle of the data: Fletcher32 catches it.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: last))
        for i in (bytes.count / 2)..<(bytes.count / 2 + 4096) { bytes[i] ^= 0xFF }
        try bytes.write(to: URL(fileURLWithPath: last))
        XCTAssertThrowsError(try Checkpoint.load(last, into: ResNet(c.netConfig))) { XCTAssertTrue("\($0)".contains("last.h5"), "\($0)") }
        // Remove epoch 2 so the fallback is visibly older; leave a half-written tmp behind.
        try FileManager.default.removeItem(atPath: run + "/ckpt/epoch-0002.h5")
        try Data(repeating: 7, count: 1000).write(to: URL(fileURLWithPath: run + "/ckpt/epoch-0003.h5.tmp"))
        c.stopAfterEpochs = 0
        let t = try Trainer(config: c, comm: SingleProcess(), resume: true)
        XCTAssertEqual(t.state.epoch, 1, "resumed from epoch-0001.h5")
        try t.run()
        XCTAssertEqual(try HDF5File(last).readInt64s("state/epoch").values, [3])
        // Truncated: HDF5 refuses to open it, by name.
        let whole = try Data(contentsOf: URL(fileURLWithPath: last))
        try whole.prefix(whole.count / 3).write(to: URL(fileURLWithPath: last))
        XCTAssertThrowsError(try Checkpoint.load(last, into: ResNet(c.netConfig))) { XCTAssertTrue("\($0)".contains("last.h5"), "\($0)") }
    }

    func testNonFiniteLossStopsWithEpochAndStepAndKeepsCheckpoint() throws {
        let run = makeTempDir("nan")
        var c = config(run)
        c.stopAfterEpochs = 1
        try Trainer(config: c, comm: SingleProcess()).run()
        let before = try Data(contentsOf: URL(fileURLWithPath: run + "/ckpt/last.h5"))
        c.stopAfterEpochs = 0
        c.lr = 1e30
        c.warmupEpochs = 0
        try c.save(to: run + "/config.json")
        XCTAssertThrowsError(try Trainer(config: c, comm: SingleProcess(), resume: true).run()) {
            XCTAssertTrue("\($0)".contains("at epoch 2, step"), "\($0)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/ckpt/last.h5")), before, "the last good checkpoint stays")
    }
}
