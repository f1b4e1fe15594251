import ArgumentParser
import Foundation
import Net

// The configuration of a run, in one place: the fields with their defaults
// (`TrainConfig`), their checks (`validate`), their command-line options
// (`TrainOptions`, defaults read from `TrainConfig`), and `config.json`
// (the synthesized Codable). Adding an option touches this file only.

/// How the network starts: random (Kaiming) initialisation, or a source
/// network trained on another task.
public enum TrainingMethod: String, Codable, CaseIterable, Sendable, ExpressibleByArgument { case scratch, transfer }

/// How an RGB source's conv1 meets gray images: `sum` over its input channels
/// (a 1-channel network: a gray g fed as (g, g, g) gives the same activation),
/// or `replicate` the gray channel 3 times (the network keeps 3 channels).
public enum Conv1Adaptation: String, Codable, CaseIterable, Sendable, ExpressibleByArgument { case sum, replicate }

/// How the learning rate follows the global batch (Goyal et al. 2017, "Accurate,
/// Large Minibatch SGD": linear; Krizhevsky 2014 and LAMB-style rules: sqrt).
public enum LRScaling: String, Codable, CaseIterable, Sendable, ExpressibleByArgument { case none, linear, sqrt }

extension AllreduceMode: ExpressibleByArgument {}
extension Arch: ExpressibleByArgument {}
extension OptimizerKind: ExpressibleByArgument {}
extension ScheduleKind: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// The full resolved configuration of a run, saved as `config.json` so that
/// `resume` needs no flags. Every key of the file is optional: a config.json
/// from an older disttrain loads with the defaults written here for what it lacks.
public struct TrainConfig: Codable, Sendable, Equatable {
    public var method: TrainingMethod = .scratch
    public var arch: Arch = .resnet18
    /// What the user gave: a source folder or a prepared .h5.
    public var data: String = "../shared/data/sars-cov-2-ct-224"
    /// The prepared .h5 actually read (filled by `RunSetup.resolveData`).
    public var dataset: String = ""
    public var epochs: Int = 20
    /// Global batch, split evenly over ranks.
    public var batchSize: Int = 32
    /// Peak learning rate for the global batch.
    public var lr: Double = 0.02
    public var optimizer: OptimizerKind = .sgd
    public var momentum: Double = 0.9
    public var weightDecay: Double = 1e-4
    public var schedule: ScheduleKind = .cosine
    /// Linear warm-up, in epochs.
    public var warmupEpochs: Double = 1
    /// Training and evaluation resolution (square).
    public var imageSize: Int = 224
    /// Seed of initialisation, data order and augmentation.
    public var seed: UInt64 = 0
    /// The run folder.
    public var run: String = ""
    public var labelSmoothing: Double = 0
    public var augment: Bool = true
    /// Epoch checkpoints kept (last.h5 and best.h5 always stay).
    public var keepCheckpoints: Int = 3
    public var evalBatchSize: Int = 32
    /// Channels of the stem (64 as torchvision; smaller for quick tests).
    public var width: Int = 64
    /// Filled from the data set (and the transfer source's normalisation).
    public var inChannels: Int = 1
    public var numClasses: Int = 2
    public var classNames: [String] = []
    public var mean: [Double] = []
    public var std: [Double] = []
    public var datasetFingerprint: String = ""
    /// DICOM/NIfTI data sets: the HU window their slices were made with (a
    /// `--window` argument: lung, mediastinum, W,L or file); predict applies it again.
    public var window: String? = nil
    /// GEMMs of convolutions and the linear layer: fp32, or bf16 operands with fp32
    /// accumulation (CPU autocast; needs AVX512-BF16). Weights and checkpoints stay fp32.
    public var precision: Precision = .fp32
    /// Transfer learning: the source checkpoint (HDF5, torchvision keys).
    public var pretrained: String = ""
    /// Transfer: epochs training the new head alone (backbone and its BN frozen).
    public var freezeEpochs: Int = 2
    /// Transfer: learning-rate multiplier of the backbone once it trains.
    public var backboneLRScale: Double = 0.1
    public var adaptConv1: Conv1Adaptation = .sum
    /// BatchNorm uses (and keeps) its running statistics while training: the
    /// per-rank batch statistics then play no part, so 2 ranks and 1 process
    /// compute the same step (the equivalence test uses it).
    public var frozenBatchNormStatistics: Bool = false
    /// Stop after this many epochs of this invocation (tests, time-boxed runs); 0 = no limit.
    public var stopAfterEpochs: Int = 0
    /// Decay of the weights' exponential moving average (`WeightEMA`); 0 = off.
    /// When on, validation, best.h5 and inference use the averaged weights.
    public var ema: Double = 0
    /// BatchNorm statistics over the global batch (all ranks), not each rank's slice.
    public var syncBatchNorm: Bool = false
    /// The gradient all-reduce: overlapped with backward (default) or after it.
    public var allreduce: AllreduceMode = .overlapped
    /// Size of the gradient buckets, MiB (DDP's default, 25).
    public var bucketMiB: Double = 25
    /// The peak learning rate is `lr` at `referenceBatch`, scaled to `batchSize` by this rule.
    public var lrScaling: LRScaling = .none
    public var referenceBatch: Int = 32

    /// The peak learning rate the schedule uses.
    public var effectiveLR: Double {
        let ratio = Double(batchSize) / Double(max(referenceBatch, 1))
        switch lrScaling {
        case .none: return lr
        case .linear: return lr * ratio
        case .sqrt: return lr * ratio.squareRoot()
        }
    }

    public init() {}

    public var netConfig: ResNetConfig {
        ResNetConfig(arch: arch, inChannels: inChannels, numClasses: numClasses, width: width)
    }

    /// The problems of this configuration, each naming its command-line option;
    /// the same checks for argv (exit 64) and for config.json (exit 1).
    public func problems() -> [String] {
        var p: [String] = []
        func need(_ ok: Bool, _ s: String) { if !ok { p.append(s) } }
        func within(_ v: Double, _ lo: Double, _ hi: Double) -> Bool { v.isFinite && v >= lo && v <= hi }
        need((1...1_000_000).contains(epochs), "--epochs must be in 1...1000000")
        need((2...65_536).contains(batchSize), "--batch-size must be in 2...65536")
        need(lr.isFinite && lr > 0, "--lr must be a positive number")
        need(within(momentum, 0, 0.999_999), "momentum must be in [0, 1)")
        need(within(weightDecay, 0, 1e6), "--weight-decay must be a number in [0, 1e6]")
        need(within(warmupEpochs, 0, Double(max(epochs, 1))), "--warmup-epochs must be in [0, --epochs]")
        need((32...4096).contains(imageSize), "--image-size must be in 32...4096 (ResNet downsamples 32x)")
        need(within(labelSmoothing, 0, 0.999_999), "--label-smoothing must be in [0, 1)")
        need((0...1_000_000).contains(keepCheckpoints), "--keep-checkpoints must be in 0...1000000")
        need((1...65_536).contains(evalBatchSize), "evalBatchSize must be in 1...65536")
        // 256 = 4x torchvision's 64: a ResNet-50 of 408 M parameters (1.6 GB of weights, about 8 GB to
        // train). Each doubling quadruples the model: width 1024 in a config.json is an 11 GB ResNet-18.
        need((1...256).contains(width), "--width must be in 1...256")
        need((1...64).contains(inChannels), "inChannels must be in 1...64")
        need((1...100_000).contains(numClasses), "numClasses must be in 1...100000")
        need((0...1_000_000).contains(freezeEpochs), "--freeze-epochs must be in 0...1000000")
        need(backboneLRScale.isFinite && backboneLRScale > 0, "--backbone-lr-scale must be a positive number")
        need((0...1_000_000).contains(stopAfterEpochs), "--stop-after must be in 0...1000000")
        need(ema.isFinite && ema >= 0 && ema < 1, "--ema must be in [0, 1) (0: off)")
        need(bucketMiB.isFinite && bucketMiB >= 0.001 && bucketMiB <= 4096, "--bucket-mb must be in 0.001...4096")
        need((1...65_536).contains(referenceBatch), "--reference-batch must be in 1...65536")
        for (name, v) in [("mean", mean), ("std", std)] where !v.isEmpty {
            need(v.count == 1 || v.count == inChannels, "\(name) must have 1 or inChannels (\(inChannels)) values, has \(v.count)")
            need(v.allSatisfy { $0.isFinite }, "\(name) must be finite")
        }
        // The network sees (pixel / 255 - mean) / std with pixel / 255 in [0, 1], so a data set's mean lies
        // in [0, 1] (and a transfer source's: ImageNet's is 0.485, 0.456, 0.406); [-1, 2] leaves room and
        // refuses means on the 0...255 scale (123.675). A std of at least 1e-6 (a 4000th of a grey level)
        // keeps every input within |3 / 1e-6| = 3e6, far from float32's 3e38: 1e-300 made them infinite.
        need(mean.allSatisfy { $0 >= -1 && $0 <= 2 }, "mean must be in [-1, 2] (inputs are pixel / 255, in [0, 1])")
        need(std.allSatisfy { $0 >= 1e-6 }, "std must be positive, at least 1e-6 (inputs are pixel / 255, in [0, 1])")
        need(mean.isEmpty == std.isEmpty, "mean and std go together")
        need(classNames.isEmpty || classNames.count == numClasses, "classNames must name the numClasses (\(numClasses)) classes")
        return p
    }

    public func save(to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try durableWrite(path, data: try enc.encode(self))
    }

    /// Reads config.json: the file's keys over the defaults, then the same checks as argv.
    public static func load(_ path: String) throws -> TrainConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RuntimeError("no config at '\(path)' (is this a run folder?)")
        }
        let config: TrainConfig
        do {
            guard let given = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw RuntimeError("not a JSON object")
            }
            var merged = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TrainConfig())) as? [String: Any] ?? [:]
            merged.merge(given) { _, file in file }
            config = try JSONDecoder().decode(TrainConfig.self, from: JSONSerialization.data(withJSONObject: merged))
        } catch {
            throw RuntimeError("'\(path)' is not a valid disttrain config: \(error)")
        }
        if let first = config.problems().first { throw RuntimeError("'\(path)': \(first)") }
        return config
    }
}

/// The options of `train`, decoded straight into a `TrainConfig`: each
/// option's default is the config's.
struct TrainOptions: ParsableArguments {
    private static let defaults = TrainConfig()

    @Option(help: "Training method: scratch (Kaiming init) or transfer (from --pretrained).")
    var method: TrainingMethod = defaults.method
    @Option(help: "Architecture: \(Arch.allCases.map(\.rawValue).joined(separator: ", ")).")
    var arch: Arch = defaults.arch
    @Option(help: """
        Data: a folder (train.csv/val.csv/test.csv, or train/<class>/ folders), prepared once into a cache, \
        or a prepared .h5.
        """)
    var data: String = defaults.data
    @Option(help: "Epochs.") var epochs: Int = defaults.epochs
    @Option(help: "Global batch size (split evenly over ranks).") var batchSize: Int = defaults.batchSize
    @Option(help: "Peak learning rate for the global batch.") var lr: Double = defaults.lr
    @Option(help: "Optimizer: sgd or adamw.") var optimizer: OptimizerKind = defaults.optimizer
    @Option(help: "Weight decay.") var weightDecay: Double = defaults.weightDecay
    @Option(help: "Learning-rate schedule after warm-up: constant, step or cosine.") var schedule: ScheduleKind = defaults.schedule
    @Option(help: "Linear warm-up, in epochs.") var warmupEpochs: Double = defaults.warmupEpochs
    @Option(help: "Training and evaluation resolution (square).") var imageSize: Int = defaults.imageSize
    @Option(help: "Seed of initialisation, data order and augmentation.") var seed: UInt64 = defaults.seed
    @Option(help: "Run folder (default: checkpoints/<method>).") var run: String?
    @Option(help: "Label smoothing of the cross-entropy.") var labelSmoothing: Double = defaults.labelSmoothing
    @Flag(inversion: .prefixedNo, help: "Train-time augmentation (shift/scale/rotation, flip, brightness/contrast).")
    var augment = defaults.augment
    @Option(help: "Epoch checkpoints to keep (last.h5 and best.h5 always stay).") var keepCheckpoints: Int = defaults.keepCheckpoints
    @Option(help: ArgumentHelp("Channels of the stem (64 as torchvision; smaller for quick tests).", visibility: .hidden))
    var width: Int = defaults.width
    @Flag(help: ArgumentHelp("BatchNorm trains on its running statistics (tests).", visibility: .hidden))
    var frozenBnStats = defaults.frozenBatchNormStatistics
    @Option(help: "Transfer source (HDF5 from pretrain or import-weights); default: \(defaultSource), built by pretrain when missing.")
    var pretrained: String?
    @Option(help: "Transfer: epochs training the new head alone (backbone and its BatchNorm frozen).")
    var freezeEpochs: Int = defaults.freezeEpochs
    @Option(help: "Transfer: learning-rate multiplier of the backbone after the frozen epochs.")
    var backboneLrScale: Double = defaults.backboneLRScale
    @Option(help: "Transfer: an RGB source's conv1 on gray images: sum (over its input channels) or replicate (gray x3).")
    var adaptConv1: Conv1Adaptation = defaults.adaptConv1
    @Option(help: "Exponential moving average of the weights, e.g. 0.999 (0: off); validation, best.h5 and inference use it.")
    var ema: Double = defaults.ema
    @Flag(help: "SyncBatchNorm: BatchNorm statistics (and their gradients) over the global batch of all ranks.")
    var syncBn = defaults.syncBatchNorm
    @Option(help: "Gradient all-reduce: overlapped (buckets start while backward runs) or blocking (after it).")
    var allreduce: AllreduceMode = defaults.allreduce
    @Option(help: "Gradient bucket size in MiB.") var bucketMb: Double = defaults.bucketMiB
    @Option(help: "Scale --lr from --reference-batch to --batch-size: none, linear or sqrt (warm-up as --warmup-epochs).")
    var lrScaling: LRScaling = defaults.lrScaling
    @Option(help: "The batch --lr is meant for, with --lr-scaling.") var referenceBatch: Int = defaults.referenceBatch
    @Option(help: "GEMM precision: fp32, or bf16 (operands rounded to bfloat16, fp32 accumulation; needs AVX512-BF16).")
    var precision: Precision = defaults.precision

    var config: TrainConfig {
        var c = TrainConfig()
        c.method = method; c.arch = arch; c.data = data; c.epochs = epochs; c.batchSize = batchSize; c.lr = lr
        c.optimizer = optimizer; c.weightDecay = weightDecay; c.schedule = schedule; c.warmupEpochs = warmupEpochs
        c.imageSize = imageSize; c.seed = seed; c.run = run ?? "checkpoints/\(method.rawValue)"
        c.labelSmoothing = labelSmoothing; c.augment = augment; c.keepCheckpoints = keepCheckpoints; c.width = width
        c.frozenBatchNormStatistics = frozenBnStats; c.ema = ema
        c.syncBatchNorm = syncBn; c.allreduce = allreduce; c.bucketMiB = bucketMb
        c.lrScaling = lrScaling; c.referenceBatch = referenceBatch; c.precision = precision
        if method == .transfer {
            c.pretrained = pretrained ?? defaultSource
            c.freezeEpochs = freezeEpochs; c.backboneLRScale = backboneLrScale; c.adaptConv1 = adaptConv1
        }
        return c
    }

    func validate() throws {
        if let first = config.problems().first { throw ValidationError(first) }
        if pretrained != nil && method != .transfer { throw ValidationError("--pretrained goes with --method transfer") }
    }
}

/// The transfer source `--method transfer` uses when --pretrained is not given.
let defaultSource = "checkpoints/source-cifar10/ckpt/last.h5"
