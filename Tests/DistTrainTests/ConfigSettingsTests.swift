import ArgumentParser
@testable import DistTrain
import Foundation
import Net
import XCTest

/// `TrainConfig.settings`, the one row per field that problems(), `train`'s options
/// and the checks of bench, smoke and resume come from; and the configs of real
/// earlier runs, which must keep loading.
final class ConfigSettingsTests: XCTestCase {
    /// An option declared in TrainOptions without a row would be parsed and then dropped
    /// on the way to TrainConfig; a row naming a flag train lacks would name it in errors.
    func testEveryOptionOfTrainHasItsRowAndEveryRowItsOption() {
        let help = TrainOptions.helpMessage(includeHidden: true, columns: 10_000)
        let flags = Set(help.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.hasPrefix("--") ? String(t.prefix { !$0.isWhitespace && $0 != "/" }) : nil
        })
        let rows = TrainConfig.settings.filter { $0.option != nil }.map(\.name)
        XCTAssertEqual(rows.count, Set(rows).count, "a flag has two rows: \(rows)")
        XCTAssertEqual(Set(rows), flags)
        XCTAssertEqual(flags.count, 30)
    }

    /// Each option lands in its own field: every option given a value other than its default.
    func testEveryOptionSetsItsField() throws {
        let o = try TrainOptions.parse([
            "--method", "transfer", "--arch", "resnet50", "--data", "d.h5", "--epochs", "7", "--batch-size", "6", "--lr", "0.3",
            "--optimizer", "adamw", "--weight-decay", "0.5", "--schedule", "step", "--warmup-epochs", "2.5", "--image-size", "64",
            "--seed", "18446744073709551615", "--run", "r", "--label-smoothing", "0.2", "--no-augment", "--keep-checkpoints", "4",
            "--width", "8", "--frozen-bn-stats", "--pretrained", "p.h5", "--freeze-epochs", "3", "--backbone-lr-scale", "0.25",
            "--adapt-conv1", "replicate", "--ema", "0.99", "--sync-bn", "--allreduce", "blocking", "--bucket-mb", "2",
            "--lr-scaling", "sqrt", "--reference-batch", "64", "--precision", "bf16", "--lung-field",
        ])
        var want = TrainConfig()
        want.method = .transfer; want.arch = .resnet50; want.data = "d.h5"; want.epochs = 7; want.batchSize = 6; want.lr = 0.3
        want.optimizer = .adamw; want.weightDecay = 0.5; want.schedule = .step; want.warmupEpochs = 2.5; want.imageSize = 64
        want.seed = .max; want.run = "r"; want.labelSmoothing = 0.2; want.augment = false; want.keepCheckpoints = 4
        want.width = 8; want.frozenBatchNormStatistics = true; want.pretrained = "p.h5"; want.freezeEpochs = 3
        want.backboneLRScale = 0.25; want.adaptConv1 = .replicate; want.ema = 0.99; want.syncBatchNorm = true
        want.allreduce = .blocking; want.bucketMiB = 2; want.lrScaling = .sqrt; want.referenceBatch = 64; want.precision = .bf16
        want.lungField = true
        XCTAssertEqual(o.config, want)

        // Defaults that depend on other options, and the transfer options, which a scratch run ignores.
        var scratch = TrainConfig()
        scratch.run = "checkpoints/scratch"
        XCTAssertEqual(try TrainOptions.parse(["--freeze-epochs", "5", "--adapt-conv1", "replicate"]).config, scratch)
        let transfer = try TrainOptions.parse(["--method", "transfer"]).config
        XCTAssertEqual([transfer.run, transfer.pretrained], ["checkpoints/transfer", defaultSource])
    }

    /// The messages, word for word (the same rows check config.json: exit 1, the file named).
    func testOutOfRangeValuesGetTheirRowsMessage() {
        func refusal<C: ParsableArguments>(_ command: C.Type, _ args: [String]) -> String {
            do {
                _ = try C.parse(args)
                return "accepted"
            } catch {
                XCTAssertEqual(C.exitCode(for: error), .validationFailure, "\(args)")
                return C.message(for: error)
            }
        }
        let train: [([String], String)] = [
            (["--epochs", "0"], "--epochs must be in 1...1000000"),
            (["--batch-size", "1"], "--batch-size must be in 2...65536"),
            (["--lr", "nan"], "--lr must be a positive number"),
            (["--lr=-0"], "--lr must be a positive number"),
            (["--weight-decay", "2e6"], "--weight-decay must be a number in [0, 1e6]"),
            (["--warmup-epochs", "1e300"], "--warmup-epochs must be in [0, --epochs]"),
            (["--epochs", "3", "--warmup-epochs", "3.5"], "--warmup-epochs must be in [0, --epochs]"),
            (["--image-size", "16"], "--image-size must be in 32...4096 (ResNet downsamples 32x)"),
            (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
            (["--keep-checkpoints=-1"], "--keep-checkpoints must be in 0...1000000"),
            (["--width", "257"], "--width must be in 1...256"),
            (["--method", "transfer", "--freeze-epochs=-1"], "--freeze-epochs must be in 0...1000000"),
            (["--method", "transfer", "--backbone-lr-scale", "inf"], "--backbone-lr-scale must be a positive number"),
            (["--ema", "1"], "--ema must be in [0, 1) (0: off)"),
            (["--bucket-mb", "0.0009"], "--bucket-mb must be in 0.001...4096"),
            (["--reference-batch", "0"], "--reference-batch must be in 1...65536"),
            (["--pretrained", "p.h5"], "--pretrained goes with --method transfer"),
        ]
        for (args, message) in train { XCTAssertEqual(refusal(TrainOptions.self, args), message, "\(args)") }
        XCTAssertEqual(refusal(TrainOptions.self, ["--ema", "0.999999"]), "accepted")

        // Fields no option sets, as config.json names them.
        var c = TrainConfig()
        c.momentum = 1; c.evalBatchSize = 0; c.inChannels = 65; c.numClasses = 0
        XCTAssertEqual(c.problems(), ["momentum must be in [0, 1)", "evalBatchSize must be in 1...65536",
                                      "inChannels must be in 1...64", "numClasses must be in 1...100000"])

        // The other commands: the same rows, under their own option names.
        XCTAssertEqual(refusal(Bench.self, ["--channels", "0"]), "--channels must be in 1...64")
        XCTAssertEqual(refusal(Smoke.self, ["--classes", "100001"]), "--classes must be in 1...100000")
        XCTAssertEqual(refusal(Smoke.self, ["--classes", "1"]), "--classes must be at least 2")
        XCTAssertEqual(refusal(Bench.self, ["--width", "1024"]), "--width must be in 1...256")
        XCTAssertEqual(refusal(Bench.self, ["--bucket-mb", "0"]), "--bucket-mb must be in 0.001...4096")
        XCTAssertEqual(refusal(Smoke.self, ["--lr", "0"]), "--lr must be a positive number")
        XCTAssertEqual(refusal(Pretrain.self, ["--image-size", "8"]), "--image-size must be in 32...4096 (ResNet downsamples 32x)")
        XCTAssertEqual(refusal(Resume.self, ["run", "--epochs", "0"]), "--epochs must be in 1...1000000")
        XCTAssertEqual(refusal(Resume.self, ["run", "--stop-after=-1"]), "--stop-after must be in 0...1000000")
        XCTAssertEqual(refusal(Train.self, ["--stop-after", "1000001"]), "--stop-after must be in 0...1000000")
    }

    /// Each command's defaults are its own; the options it lacks keep train's.
    func testCommandsReadTheirDefaultsAndOptionsIntoOneConfig() throws {
        let smoke = try Smoke.parse(["--channels", "3", "--width", "4"]).config
        XCTAssertEqual([smoke.batchSize, smoke.inChannels, smoke.width, smoke.numClasses], [8, 3, 4, 2])
        XCTAssertEqual(smoke.lr, 0.05)
        let bench = try Bench.parse(["--bucket-mb", "0.5", "--sync-bn", "--classes", "10"]).config
        XCTAssertEqual(bench.bucketMiB, 0.5)
        XCTAssertTrue(bench.syncBatchNorm)
        XCTAssertEqual(bench.netConfig, ResNetConfig(arch: .resnet18, inChannels: 1, numClasses: 10, width: 64))
        let pretrain = try Pretrain.parse(["--epochs", "3"]).config
        XCTAssertEqual([pretrain.epochs, pretrain.imageSize, pretrain.batchSize, pretrain.evalBatchSize], [3, 32, 128, 250])
    }

    /// The config.json of every run in docs/results (written before `precision` existed),
    /// and of the first round's scratch run (2026-11-26, before the transfer, EMA and
    /// all-reduce fields): their keys over today's defaults.
    func testConfigsOfEarlierRunsLoad() throws {
        let results = packageRoot + "/docs/results"
        let runs = try FileManager.default.contentsOfDirectory(atPath: results).sorted()
            .filter { FileManager.default.fileExists(atPath: "\(results)/\($0)/config.json") }
        XCTAssertEqual(runs, ["parity-bf16", "scratch", "source-cifar10", "transfer"])
        for run in runs {
            let c = try TrainConfig.load("\(results)/\(run)/config.json")
            XCTAssertEqual(c.precision, run == "parity-bf16" ? .bf16 : .fp32, run)
            XCTAssertEqual(c.method, run == "transfer" ? .transfer : .scratch, run)
        }
        let source = try TrainConfig.load(results + "/source-cifar10/config.json")
        XCTAssertEqual([source.inChannels, source.numClasses, source.batchSize, source.evalBatchSize, source.imageSize], [3, 10, 128, 250, 32])
        XCTAssertEqual(source.std.count, 3)
        XCTAssertEqual(try TrainConfig.load(results + "/transfer/config.json").backboneLRScale, 0.5)

        let dir = makeTempDir("firstround")
        try #"""
        {
          "arch" : "resnet18", "augment" : true, "batchSize" : 32, "classNames" : [ "NORMAL", "COVID" ],
          "data" : "..\/shared\/data\/sars-cov-2-ct-224", "dataset" : "runs\/.cache\/sars-cov-2-ct-224-45984ac9bbbf3e1f.h5",
          "datasetFingerprint" : "45984ac9bbbf3e1f", "epochs" : 30, "evalBatchSize" : 32, "frozenBatchNormStatistics" : false,
          "imageSize" : 112, "inChannels" : 1, "keepCheckpoints" : 3, "labelSmoothing" : 0.1, "lr" : 0.02,
          "mean" : [ 0.6394225771879524 ], "method" : "scratch", "momentum" : 0.9, "numClasses" : 2, "optimizer" : "sgd",
          "run" : "runs\/scratch112", "schedule" : "cosine", "seed" : 0, "std" : [ 0.27193020168432647 ],
          "stopAfterEpochs" : 0, "warmupEpochs" : 1, "weightDecay" : 0.0001, "width" : 64
        }
        """#.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        let first = try TrainConfig.load(dir + "/config.json")
        XCTAssertEqual([first.epochs, first.imageSize], [30, 112])
        XCTAssertEqual(first.run, "runs/scratch112")
        XCTAssertEqual(first.mean, [0.6394225771879524])
        let d = TrainConfig()
        XCTAssertEqual([first.ema, first.bucketMiB, first.backboneLRScale], [d.ema, d.bucketMiB, d.backboneLRScale])
        XCTAssertEqual([first.freezeEpochs, first.referenceBatch], [d.freezeEpochs, d.referenceBatch])
        XCTAssertEqual(first.allreduce, d.allreduce)
        XCTAssertEqual(first.lrScaling, d.lrScaling)
        XCTAssertEqual(first.precision, .fp32)
    }
}
