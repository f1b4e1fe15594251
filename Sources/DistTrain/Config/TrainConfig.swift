import ArgumentParser
import Foundation
import Net

// The configuration of a run, in one place: the fields with their defaults
// (`TrainConfig`; config.json is its synthesized Codable, so the field names
// are the file's keys), and `TrainConfig.settings`, one row per field a user
// sets: the option that names it, its range, and the option of `train` it is
// read from. The checks (`problems()`, the same for argv and config.json),
// `TrainOptions.config`, and the checks of pretrain, bench, smoke and resume
// all come from those rows. Adding an option: its field, its `@Option` in
// `TrainOptions` (the flag and its help), and its row.

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
    /// Every image the network sees (training, evaluation, predict) has everything
    /// outside its lung mask (`LungMask`, dilated as the occlusion check) set to the
    /// image's darkest grey: the lung-field remedy of issue 27 against shortcuts at
    /// the image's edges.
    public var lungField: Bool = false

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

    /// Every field a user sets (in field order, which is the order problems() reports them),
    /// with the option errors name it by and its range. `train`'s options are read through
    /// these rows too: ConfigSettingsTests checks that every option of `train` has one.
    static let settings: [Setting] = [
        Setting(\.method, "--method", from: \.method),
        Setting(\.arch, "--arch", from: \.arch),
        Setting(\.data, "--data", from: \.data),
        Setting(\.epochs, "--epochs", in: 1...1_000_000, from: \.epochs),
        Setting(\.batchSize, "--batch-size", in: 2...65_536, from: \.batchSize),
        Setting(\.lr, "--lr", in: Setting.positive, shown: "a positive number", from: \.lr),
        Setting(\.optimizer, "--optimizer", from: \.optimizer),
        Setting(\.momentum, "momentum", in: 0...0.999_999, shown: "in [0, 1)"),
        Setting(\.weightDecay, "--weight-decay", in: 0...1e6, shown: "a number in [0, 1e6]", from: \.weightDecay),
        Setting(\.schedule, "--schedule", from: \.schedule),
        Setting(\.warmupEpochs, "--warmup-epochs", in: { 0...Double(max($0.epochs, 1)) }, shown: "in [0, --epochs]",
                from: \.warmupEpochs),
        Setting(\.imageSize, "--image-size", in: 32...4096, note: "ResNet downsamples 32x", from: \.imageSize),
        Setting(\.seed, "--seed", from: \.seed),
        Setting(\.run, "--run") { $0.run ?? "checkpoints/\($0.method.rawValue)" },
        Setting(\.labelSmoothing, "--label-smoothing", in: 0...0.999_999, shown: "in [0, 1)", from: \.labelSmoothing),
        Setting(\.augment, "--augment", from: \.augment),
        Setting(\.keepCheckpoints, "--keep-checkpoints", in: 0...1_000_000, from: \.keepCheckpoints),
        Setting(\.evalBatchSize, "evalBatchSize", in: 1...65_536),
        // 256 = 4x torchvision's 64: a ResNet-50 of 408 M parameters (1.6 GB of weights, about 8 GB to
        // train). Each doubling quadruples the model: width 1024 in a config.json is an 11 GB ResNet-18.
        Setting(\.width, "--width", in: 1...256, from: \.width),
        Setting(\.inChannels, "inChannels", in: 1...64),
        Setting(\.numClasses, "numClasses", in: 1...100_000),
        Setting(\.precision, "--precision", from: \.precision),
        Setting(\.pretrained, "--pretrained") { $0.method == .transfer ? $0.pretrained ?? defaultSource : nil },
        Setting(\.freezeEpochs, "--freeze-epochs", in: 0...1_000_000, from: \.freezeEpochs, only: .transfer),
        Setting(\.backboneLRScale, "--backbone-lr-scale", in: Setting.positive, shown: "a positive number",
                from: \.backboneLRScale, only: .transfer),
        Setting(\.adaptConv1, "--adapt-conv1", from: \.adaptConv1, only: .transfer),
        Setting(\.frozenBatchNormStatistics, "--frozen-bn-stats", from: \.frozenBatchNormStatistics),
        // Set by --stop-after of train and resume (SessionOptions), not by TrainOptions.
        Setting(\.stopAfterEpochs, "--stop-after", in: 0...1_000_000),
        Setting(\.ema, "--ema", in: 0...1.0.nextDown, shown: "in [0, 1) (0: off)", from: \.ema),
        Setting(\.syncBatchNorm, "--sync-bn", from: \.syncBatchNorm),
        Setting(\.lungField, "--lung-field", from: \.lungField),
        Setting(\.allreduce, "--allreduce", from: \.allreduce),
        Setting(\.bucketMiB, "--bucket-mb", in: 0.001...4096, shown: "in 0.001...4096", from: \.bucketMiB),
        Setting(\.lrScaling, "--lr-scaling", from: \.lrScaling),
        Setting(\.referenceBatch, "--reference-batch", in: 1...65_536, from: \.referenceBatch),
    ]

    /// The problems of this configuration, each naming its command-line option;
    /// the same checks for argv (exit 64) and for config.json (exit 1).
    public func problems() -> [String] { problems(naming: [:]) }

    /// problems(), with the fields in `names` called so (the options of bench and smoke).
    func problems(naming names: [PartialKeyPath<TrainConfig>: String]) -> [String] {
        var p = TrainConfig.settings.compactMap { $0.problem(self, as: names[$0.field]) }
        func need(_ ok: Bool, _ s: String) { if !ok { p.append(s) } }
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

    /// The problem of one field given alone, before there is a whole config to check
    /// (resume's --epochs and --stop-after are checked as options, before config.json is read).
    static func problem<V>(_ field: WritableKeyPath<TrainConfig, V>, _ value: V) -> String? {
        var c = TrainConfig()
        c[keyPath: field] = value
        return settings.first { $0.field == field as PartialKeyPath<TrainConfig> }?.problem(c)
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

/// The options of `train`, read into a `TrainConfig` through `TrainConfig.settings`:
/// each option's default is the config's, and each property has its field's name
/// (the flag keeps its own where they differ: --bucket-mb is `bucketMiB`).
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
    @Option(help: "Optimizer: \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var optimizer: OptimizerKind = defaults.optimizer
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
    @Flag(name: .customLong("frozen-bn-stats"), help: ArgumentHelp("BatchNorm trains on its running statistics (tests).", visibility: .hidden))
    var frozenBatchNormStatistics = defaults.frozenBatchNormStatistics
    @Option(help: "Transfer source (HDF5 from pretrain or import-weights); default: \(defaultSource), built by pretrain when missing.")
    var pretrained: String?
    @Option(help: "Transfer: epochs training the new head alone (backbone and its BatchNorm frozen).")
    var freezeEpochs: Int = defaults.freezeEpochs
    @Option(help: "Transfer: learning-rate multiplier of the backbone after the frozen epochs.")
    var backboneLRScale: Double = defaults.backboneLRScale
    @Option(help: "Transfer: an RGB source's conv1 on gray images: sum (over its input channels) or replicate (gray x3).")
    var adaptConv1: Conv1Adaptation = defaults.adaptConv1
    @Option(help: "Exponential moving average of the weights, e.g. 0.999 (0: off); validation, best.h5 and inference use it.")
    var ema: Double = defaults.ema
    @Flag(name: .customLong("sync-bn"), help: "SyncBatchNorm: BatchNorm statistics (and their gradients) over the global batch of all ranks.")
    var syncBatchNorm = defaults.syncBatchNorm
    @Flag(name: .customLong("lung-field"),
          help: "Only the lung field: outside each image's lung mask the image becomes its darkest grey, in training, eval and predict.")
    var lungField = defaults.lungField
    @Option(help: "Gradient all-reduce: overlapped (buckets start while backward runs) or blocking (after it).")
    var allreduce: AllreduceMode = defaults.allreduce
    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MiB.") var bucketMiB: Double = defaults.bucketMiB
    @Option(help: "Scale --lr from --reference-batch to --batch-size: none, linear or sqrt (warm-up as --warmup-epochs).")
    var lrScaling: LRScaling = defaults.lrScaling
    @Option(help: "The batch --lr is meant for, with --lr-scaling.") var referenceBatch: Int = defaults.referenceBatch
    @Option(help: "GEMM precision: fp32, or bf16 (operands rounded to bfloat16, fp32 accumulation; needs AVX512-BF16).")
    var precision: Precision = defaults.precision

    var config: TrainConfig {
        var c = TrainConfig()
        for s in TrainConfig.settings { s.option?(self, &c) }
        return c
    }

    func validate() throws {
        if let first = config.problems().first { throw ValidationError(first) }
        if pretrained != nil && method != .transfer { throw ValidationError("--pretrained goes with --method transfer") }
    }
}

/// The transfer source `--method transfer` uses when --pretrained is not given.
let defaultSource = "checkpoints/source-cifar10/ckpt/last.h5"
