import DistTrain
import Foundation
import Net
import XCTest

/// --ema: the average (weights and BatchNorm statistics) follows torchvision's rule, validation and best.h5 use
/// it, and resume stays exact because the average is in the checkpoint.
final class EMATests: XCTestCase {
    static var data: String = preparedSyntheticSet("ema-data", train: 16, val: 4, test: 4)

    func config(_ run: String, epochs: Int = 3) -> TrainConfig {
        var c = smallRunConfig(data: EMATests.data, run: run, epochs: epochs, seed: 5)
        c.ema = 0.9
        return c
    }

    func testUpdateIsDecayTimesAveragePlusTheRestTimesWeights() {
        let net = ResNet(ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 2, width: 2))
        net.initialize(seed: 1)
        let ema = WeightEMA(decay: 0.75, store: net.store)
        let before = ema.values
        let s = net.store
        XCTAssertGreaterThan(s.bufferCount, 0)
        XCTAssertEqual(before.count, s.parameterCount + s.bufferCount)
        for i in 0..<s.parameterCount { s.values[i] += 1 }
        for i in 0..<s.bufferCount { s.buffers[i] += 2 }
        ema.update(from: s)
        for i in stride(from: 0, to: s.parameterCount, by: 97) {
            XCTAssertEqual(ema.values[i], Float(0.75) * before[i] + Float(0.25) * s.values[i])
        }
        // The BatchNorm running statistics are averaged too (AveragedModel's use_buffers=True).
        let p = s.parameterCount
        for i in stride(from: 0, to: s.bufferCount, by: 7) {
            XCTAssertEqual(ema.values[p + i], Float(0.75) * before[p + i] + Float(0.25) * s.buffers[i])
        }
        let mean = s.entry(named: "layer1.0.bn1.running_mean")!
        XCTAssertEqual(ema.values(of: mean), Array(ema.values[(p + mean.offset)..<(p + mean.offset + mean.count)]))
        func state() -> [Float] {
            Array(UnsafeBufferPointer(start: s.values, count: s.parameterCount))
                + Array(UnsafeBufferPointer(start: s.buffers, count: s.bufferCount))
        }
        let live = state()
        let inside = ema.withAveragedWeights(in: s) { state() }
        XCTAssertEqual(inside, ema.values)
        XCTAssertEqual(state(), live, "training weights and statistics restored")
    }

    func tensors(_ path: String) throws -> [String: [Float]] { try checkpointTensors(path) }

    func testResumeWithTheAverageIsBitExactAndBestHoldsTheAverage() throws {
        let a = makeTempDir("ema-a"), b = makeTempDir("ema-b")
        try Trainer(config: config(a), comm: SingleProcess()).run()
        var cb = config(b)
        cb.stopAfterEpochs = 1
        try Trainer(config: cb, comm: SingleProcess()).run()
        cb.stopAfterEpochs = 0
        try Trainer(config: cb, comm: SingleProcess(), resume: true).run()
        let ta = try tensors(a + "/ckpt/last.h5"), tb = try tensors(b + "/ckpt/last.h5")
        XCTAssertGreaterThan(ta.count, 150)
        for (k, v) in ta { XCTAssertEqual(v, tb[k], "\(k) differs after resume") }
        // model/ is the average, training/ the weights; they differ after training.
        XCTAssertNotEqual(ta["model/conv1.weight"], ta["training/conv1.weight"])
        // Both hold BatchNorm statistics too: the averaged ones and the live ones.
        XCTAssertNotNil(ta["training/bn1.running_mean"])
        XCTAssertNotEqual(ta["model/bn1.running_mean"], ta["training/bn1.running_mean"])
        XCTAssertEqual(ta["model/bn1.running_mean"], tb["model/bn1.running_mean"])
        // Evaluating best.h5 evaluates the average: the metrics of its epoch come back.
        let rows = try String(contentsOfFile: a + "/metrics.csv", encoding: .utf8).split(separator: "\n")
        let best = Int(try HDF5File(a + "/ckpt/best.h5").readInt64s("state/epoch").values[0])
        let valLoss = Double(rows[best].split(separator: ",")[3])!
        let s = try EvalStage.run(config: config(a), comm: SingleProcess(), checkpoint: a + "/ckpt/best.h5", cams: [])
        XCTAssertEqual(s.val.loss, valLoss, accuracy: 1e-5)
    }

    func testResumingWithTheAverageNeedsACheckpointThatHasIt() throws {
        let run = makeTempDir("ema-missing")
        var c = config(run)
        c.ema = 0
        c.stopAfterEpochs = 1
        try Trainer(config: c, comm: SingleProcess()).run()
        c.ema = 0.9
        XCTAssertThrowsError(try Trainer(config: c, comm: SingleProcess(), resume: true)) {
            XCTAssertTrue("\($0)".contains("training/"), "\($0)")
        }
    }

    /// The same in bf16, where the network runs channels-last inside: resume is bit-exact, and the
    /// evaluation stage (CAMs included: captures, gradients and AblationCAM's partial forwards) gives
    /// back the validation loss training recorded for best.h5.
    func testBF16RunResumesExactlyAndEvaluatesWithCAMs() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        let a = makeTempDir("ema-bf16-a"), b = makeTempDir("ema-bf16-b")
        var ca = config(a)
        ca.precision = .bf16
        try Trainer(config: ca, comm: SingleProcess()).run()
        var cb = config(b)
        cb.precision = .bf16
        cb.stopAfterEpochs = 1
        try Trainer(config: cb, comm: SingleProcess()).run()
        cb.stopAfterEpochs = 0
        try Trainer(config: cb, comm: SingleProcess(), resume: true).run()
        let ta = try tensors(a + "/ckpt/last.h5"), tb = try tensors(b + "/ckpt/last.h5")
        for (k, v) in ta { XCTAssertEqual(v, tb[k], "\(k) differs after resume") }
        let rows = try String(contentsOfFile: a + "/metrics.csv", encoding: .utf8).split(separator: "\n")
        let best = Int(try HDF5File(a + "/ckpt/best.h5").readInt64s("state/epoch").values[0])
        let valLoss = Double(rows[best].split(separator: ",")[3])!
        // Training evaluates on the plain forward: on that path (DISTTRAIN_INFERENCE=plain) eval gives it back exactly.
        let s = try EvalStage.run(config: ca, comm: SingleProcess(), checkpoint: a + "/ckpt/best.h5", cams: [.gradcam, .ablationcam],
                                  settings: EngineSettings(fusedInference: false))
        XCTAssertEqual(s.val.loss, valLoss, accuracy: 1e-5)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/report/cam-grid.png"))
        // eval's default, the fused path, rounds differently in bf16 (every activation stored as bfloat16, the folded
        // weights rounded once): the same loss to FusedInferenceTests' margin, 2 % of it here.
        let fused = try EvalStage.run(config: ca, comm: SingleProcess(), checkpoint: a + "/ckpt/best.h5", cams: [])
        XCTAssertEqual(fused.val.loss, valLoss, accuracy: 0.02 * valLoss)
    }
}
