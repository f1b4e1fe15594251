@testable import DistTrain
import Foundation
import Net
import XCTest

/// A tiny RGB class-folder source, pretrained, then fine-tuned on a gray CSV set.
final class TransferTests: XCTestCase {
    func writeRGBFolders(_ dir: String, perClass: Int = 8) throws {
        var rng = SplitMix(5)
        for split in ["train", "test"] {
            for (k, cls) in ["cat", "dog", "ship"].enumerated() {
                try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/\(cls)", withIntermediateDirectories: true)
                for i in 0..<perClass {
                    var px = [UInt8](repeating: 0, count: 32 * 32 * 3)
                    for j in 0..<px.count { px[j] = UInt8(Int(rng.next() % 60) + (j % 3 == k ? 150 : 20)) }
                    try RasterImage(width: 32, height: 32, channels: 3, pixels: px).writePNG("\(dir)/\(split)/\(cls)/\(i).png")
                }
            }
        }
    }

    func testPretrainThenFineTuneWithFrozenHeadPhase() throws {
        let root = makeTempDir("transfer")
        try writeRGBFolders(root + "/rgb")
        var src = Pretrain.defaultConfig(arch: .resnet18)
        src.data = root + "/rgb"; src.run = root + "/source"; src.epochs = 1; src.batchSize = 8; src.width = 4; src.evalBatchSize = 8
        try startTraining(src, comm: SingleProcess(), debug: false)
        let sourcePath = root + "/source/ckpt/last.h5"
        let source = try HDF5File(sourcePath)
        XCTAssertEqual(try source.shape("model/conv1.weight"), [4, 3, 7, 7])
        XCTAssertEqual(try source.shape("model/fc.weight"), [3, 32])

        let gray = try writeSyntheticCSVSet(makeTempDir("gray"), train: 16, val: 4, test: 4, size: 32)
        var t = TrainConfig()
        t.method = .transfer; t.pretrained = sourcePath; t.data = gray; t.run = root + "/transfer"
        t.epochs = 2; t.freezeEpochs = 1; t.batchSize = 8; t.imageSize = 32; t.width = 4; t.evalBatchSize = 4
        t.stopAfterEpochs = 1
        try startTraining(t, comm: SingleProcess(), debug: false)
        let cfg = try TrainConfig.load(t.run + "/config.json")
        XCTAssertEqual(cfg.inChannels, 1)
        XCTAssertEqual(cfg.mean.count, 1, "source statistics averaged for the summed conv1")
        let after1 = try HDF5File(t.run + "/ckpt/last.h5")
        // conv1 = the source's summed over RGB; frozen through epoch 1.
        let w3 = try source.readFloats("model/conv1.weight").values, w1 = try after1.readFloats("model/conv1.weight").values
        for o in 0..<4 { for k in 0..<49 {
            XCTAssertEqual(w1[o * 49 + k], w3[(o * 3) * 49 + k] + w3[(o * 3 + 1) * 49 + k] + w3[(o * 3 + 2) * 49 + k], accuracy: 1e-6)
        } }
        XCTAssertEqual(try after1.readFloats("model/layer3.1.conv2.weight").values, try source.readFloats("model/layer3.1.conv2.weight").values)
        XCTAssertEqual(try after1.readFloats("model/layer2.0.bn1.running_mean").values, try source.readFloats("model/layer2.0.bn1.running_mean").values,
                       "frozen BN keeps its statistics")
        XCTAssertEqual(try after1.shape("model/fc.weight"), [2, 32])
        // Epoch 2 trains everything.
        var r = cfg
        r.stopAfterEpochs = 0
        try Trainer(config: r, comm: SingleProcess(), resume: true).run()
        let after2 = try HDF5File(t.run + "/ckpt/last.h5")
        XCTAssertNotEqual(try after2.readFloats("model/layer3.1.conv2.weight").values, try source.readFloats("model/layer3.1.conv2.weight").values)
        // Evaluating a finished transfer run needs only its own checkpoints, not the source.
        try FileManager.default.moveItem(atPath: root + "/source", toPath: root + "/source-moved")
        let e = try runCommand([disttrainBinary, "eval", t.run, "--cams", "gradcam"])
        XCTAssertEqual(e.status, 0, e.output)
        XCTAssertFalse(e.output.contains("tensors from"), "eval does not read the source:\n" + e.output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: t.run + "/report/summary.json"))
    }

    func testArchitectureMismatchIsNamed() throws {
        let root = makeTempDir("mismatch")
        let net = ResNet(ResNetConfig(arch: .resnet50, inChannels: 3, numClasses: 10, width: 4))
        net.initialize(seed: 1)
        var c = TrainConfig()
        c.arch = .resnet50; c.width = 4; c.inChannels = 3; c.numClasses = 10
        try Checkpoint.save(root + "/r50.h5", net: net, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: net.store),
                            state: TrainState(), config: c)
        let target = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 4))
        XCTAssertThrowsError(try Transfer.loadSource(root + "/r50.h5", into: target, adapt: .sum)) {
            XCTAssertTrue("\($0)".contains("r50.h5"), "\($0)")
        }
    }
}
