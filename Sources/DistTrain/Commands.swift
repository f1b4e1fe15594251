import ArgumentParser
import Cams
import Foundation
import Net

extension Method: ExpressibleByArgument {}
extension ScheduleKind: ExpressibleByArgument {}

/// Runs `body` with MPI under mpirun (unless --debug), else as one process.
/// After MPI_Init any error ends the whole job through MPI_Abort, so no rank
/// waits forever in a collective its peer will never join.
func withCommunicator(debug: Bool, threads: ThreadOptions, _ body: (Communicator) throws -> Void) throws {
    let useMPI = MPICommunicator.launchedByMPI && !debug
    if debug && MPICommunicator.launchedByMPI {
        throw ValidationError("--debug runs one process without MPI; start it without mpirun")
    }
    _ = threads.apply()
    if useMPI {
        let comm = MPICommunicator()
        do { try body(comm) } catch { comm.abort("\(error)") }
        comm.finalize()
    } else {
        try body(SingleProcess())
    }
}

struct TrainOptions: ParsableArguments {
    @Option(help: "Training method: scratch (Kaiming init) or transfer (from --pretrained).")
    var method: Method = .scratch
    @Option(help: "Architecture: resnet18, resnet34 or resnet50.")
    var arch: Arch = .resnet18
    @Option(help: "Data: a folder (train.csv/val.csv/test.csv, or train/<class>/ folders), prepared once into a cache, or a prepared .h5.")
    var data: String = "../shared/data/sars-cov-2-ct-224"
    @Option(help: "Epochs.") var epochs: Int = 20
    @Option(help: "Global batch size (split evenly over ranks).") var batchSize: Int = 32
    @Option(help: "Peak learning rate for the global batch.") var lr: Double = 0.02
    @Option(help: "Optimizer: sgd or adamw.") var optimizer: OptimizerKind = .sgd
    @Option(help: "Weight decay.") var weightDecay: Double = 1e-4
    @Option(help: "Learning-rate schedule after warm-up: constant, step or cosine.") var schedule: ScheduleKind = .cosine
    @Option(help: "Linear warm-up, in epochs.") var warmupEpochs: Double = 1
    @Option(help: "Training and evaluation resolution (square).") var imageSize: Int = 224
    @Option(help: "Seed of initialisation, data order and augmentation.") var seed: UInt64 = 0
    @Option(help: "Run folder (default: checkpoints/<method>).") var run: String?
    @Option(help: "Label smoothing of the cross-entropy.") var labelSmoothing: Double = 0
    @Flag(inversion: .prefixedNo, help: "Train-time augmentation (shift/scale/rotation, flip, brightness/contrast).")
    var augment = true
    @Option(help: "Epoch checkpoints to keep (last.h5 and best.h5 always stay).") var keepCheckpoints: Int = 3
    @Option(help: ArgumentHelp("Channels of the stem (64 as torchvision; smaller for quick tests).", visibility: .hidden))
    var width: Int = 64
    @Option(help: "Stop after this many epochs of this invocation (0: run to --epochs); resume continues.")
    var stopAfter: Int = 0
    @Flag(help: ArgumentHelp("BatchNorm trains on its running statistics (tests).", visibility: .hidden))
    var frozenBnStats = false
    @Option(help: "Transfer source (HDF5 from pretrain or import-weights); default: \(defaultSource), built by pretrain when missing.")
    var pretrained: String?
    @Option(help: "Transfer: epochs training the new head alone (backbone and its BatchNorm frozen).") var freezeEpochs: Int = 2
    @Option(help: "Transfer: learning-rate multiplier of the backbone after the frozen epochs.") var backboneLrScale: Double = 0.1
    @Option(help: "Transfer: an RGB source's conv1 on gray images: sum (over its input channels) or replicate (gray x3).")
    var adaptConv1: String = "sum"

    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard batchSize >= 2 else { throw ValidationError("--batch-size must be at least 2") }
        guard lr > 0 else { throw ValidationError("--lr must be positive") }
        guard imageSize >= 32 else { throw ValidationError("--image-size must be at least 32") }
        guard weightDecay >= 0, labelSmoothing >= 0, labelSmoothing < 1 else {
            throw ValidationError("--weight-decay must be >= 0 and --label-smoothing in [0, 1)")
        }
        guard freezeEpochs >= 0, backboneLrScale > 0 else { throw ValidationError("--freeze-epochs must be >= 0 and --backbone-lr-scale > 0") }
        guard ["sum", "replicate"].contains(adaptConv1) else { throw ValidationError("--adapt-conv1 must be sum or replicate") }
        if pretrained != nil && method != .transfer { throw ValidationError("--pretrained goes with --method transfer") }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ResNet on the CT set (the default subcommand); under mpirun, data-parallel over ranks.",
        discussion: """
        Examples:
          mpirun -n 4 disttrain --method scratch
          disttrain --method scratch --debug --epochs 1 --image-size 112
        Rank 0 writes the run folder: config.json, ckpt/{epoch-NNNN,last,best}.h5, metrics.csv, metrics.h5.
        """)

    @OptionGroup var options: TrainOptions
    @OptionGroup var threading: ThreadOptions
    @Flag(help: "One process without MPI, NaN/Inf checks after every step, verbose.") var debug = false
    @Flag(inversion: .prefixedNo, help: "End with the evaluation stage of `disttrain eval` on best.h5 when the last epoch is done.")
    var eval = true

    func run() throws {
        try withCommunicator(debug: debug, threads: threading) { comm in
            var cfg = TrainConfig()
            let o = options
            cfg.method = o.method; cfg.arch = o.arch; cfg.data = o.data; cfg.epochs = o.epochs
            cfg.batchSize = o.batchSize; cfg.lr = o.lr; cfg.optimizer = o.optimizer; cfg.weightDecay = o.weightDecay
            cfg.schedule = o.schedule; cfg.warmupEpochs = o.warmupEpochs; cfg.imageSize = o.imageSize; cfg.seed = o.seed
            cfg.run = o.run ?? "checkpoints/\(o.method.rawValue)"
            cfg.labelSmoothing = o.labelSmoothing; cfg.augment = o.augment; cfg.keepCheckpoints = o.keepCheckpoints
            cfg.width = o.width; cfg.stopAfterEpochs = o.stopAfter; cfg.frozenBatchNormStatistics = o.frozenBnStats
            if o.method == .transfer {
                cfg.pretrained = o.pretrained ?? defaultSource
                cfg.freezeEpochs = o.freezeEpochs; cfg.backboneLRScale = o.backboneLrScale; cfg.adaptConv1 = o.adaptConv1
                if o.pretrained == nil && !FileManager.default.fileExists(atPath: defaultSource) {
                    if comm.isRoot {
                        print("no transfer source at \(defaultSource): building it first with `disttrain pretrain` on \(Pretrain.defaultData) "
                              + "(ResNet-18, 32x32, \(Pretrain.defaultEpochs) epochs: about 30-40 minutes on 2 cores)")
                    }
                    try startTraining(Pretrain.defaultConfig(arch: o.arch), comm: comm, debug: debug, evaluate: false)
                }
            }
            try startTraining(cfg, comm: comm, debug: debug, evaluate: eval)
        }
    }
}

let defaultSource = "checkpoints/source-cifar10/ckpt/last.h5"

/// A new run: rank 0 checks the folder, resolves the data and writes
/// config.json; every rank then reads that configuration and trains, and
/// (`evaluate`) ends with the evaluation stage once the last epoch is done.
func startTraining(_ config: TrainConfig, comm: Communicator, debug: Bool, evaluate: Bool = false) throws {
    var cfg = config
    guard cfg.batchSize % comm.size == 0 else {
        throw RuntimeError("--batch-size \(cfg.batchSize) does not split evenly over \(comm.size) ranks")
    }
    if comm.isRoot {
        if FileManager.default.fileExists(atPath: cfg.run + "/ckpt/last.h5") {
            throw RuntimeError("run folder '\(cfg.run)' already has checkpoints; continue it with `disttrain resume \(cfg.run)` or choose another --run")
        }
        try FileManager.default.createDirectory(atPath: cfg.run, withIntermediateDirectories: true)
        cfg = try resolveData(cfg)
        try cfg.save(to: cfg.run + "/config.json")
    }
    comm.barrier()
    let resolved = comm.broadcast(comm.isRoot ? String(decoding: try JSONEncoder().encode(cfg), as: UTF8.self) : "")
    cfg = try JSONDecoder().decode(TrainConfig.self, from: Data(resolved.utf8))
    let trainer = try Trainer(config: cfg, comm: comm, debug: debug)
    try trainer.run()
    if evaluate { try finalEvaluation(trainer, comm: comm) }
}

/// The eval stage on best.h5 after the last epoch (not after --stop-after).
func finalEvaluation(_ trainer: Trainer, comm: Communicator) throws {
    guard trainer.state.epoch >= trainer.config.epochs else { return }
    if comm.isRoot { print("evaluating \(trainer.config.run)/ckpt/best.h5 (disttrain eval)") }
    let s = try EvalStage.run(trainer: trainer, comm: comm, checkpoint: trainer.config.run + "/ckpt/best.h5")
    if comm.isRoot {
        print(String(format: "test: accuracy %.4f  loss %.4f  sensitivity %.4f  specificity %.4f  AUC %.4f",
                     s.test.accuracy, s.test.loss, s.test.sensitivity, s.test.specificity, s.test.auc))
    }
}

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build a transfer source: supervised training on another data set (default CIFAR-10), under mpirun like train.",
        discussion: "Writes a run folder whose ckpt/last.h5 is the source: torchvision keys, 3-channel conv1, 10-class fc.")

    static let defaultData = "../shared/data/cifar-10"
    static let defaultEpochs = 15

    static func defaultConfig(arch: Arch) -> TrainConfig {
        var c = TrainConfig()
        c.arch = arch; c.data = defaultData; c.run = "checkpoints/source-cifar10"
        c.imageSize = 32; c.epochs = defaultEpochs; c.batchSize = 128; c.lr = 0.1; c.weightDecay = 5e-4
        c.warmupEpochs = 1; c.labelSmoothing = 0.1; c.evalBatchSize = 250
        return c
    }

    @Option(help: "Source data: class folders train/<class>/ (and test/), or a prepared .h5.") var data: String = Pretrain.defaultData
    @Option(help: "Architecture.") var arch: Arch = .resnet18
    @Option(name: .customLong("run"), help: "Run folder.") var runDir: String = "checkpoints/source-cifar10"
    @Option(help: "Resolution (32 = CIFAR's own; 64 or 96 upsample, 4x / 9x the cost).") var imageSize: Int = 32
    @Option(help: "Epochs.") var epochs: Int = Pretrain.defaultEpochs
    @Option(help: "Global batch.") var batchSize: Int = 128
    @Option(help: "Peak learning rate.") var lr: Double = 0.1
    @Option(help: "Seed.") var seed: UInt64 = 0
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard epochs >= 1, batchSize >= 2, lr > 0, imageSize >= 32 else {
            throw ValidationError("--epochs >= 1, --batch-size >= 2, --lr > 0 and --image-size >= 32 are required")
        }
    }

    func run() throws {
        try withCommunicator(debug: false, threads: threading) { comm in
            var c = Pretrain.defaultConfig(arch: arch)
            c.data = data; c.run = runDir; c.imageSize = imageSize; c.epochs = epochs; c.batchSize = batchSize; c.lr = lr; c.seed = seed
            let t0 = now()
            try startTraining(c, comm: comm, debug: false, evaluate: false)
            if comm.isRoot {
                print(String(format: "source ready: %@/ckpt/last.h5 (%@ wall-clock); use it with --method transfer --pretrained %@/ckpt/last.h5",
                             runDir, formatDuration(now() - t0), runDir))
            }
        }
    }
}

/// Prepares (or reuses) the data set and copies its facts into the config.
func resolveData(_ cfg: TrainConfig) throws -> TrainConfig {
    var cfg = cfg
    let fm = FileManager.default
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: cfg.data, isDirectory: &isDir) else { throw RuntimeError("--data '\(cfg.data)' does not exist") }
    if isDir.boolValue {
        let source = try DatasetSource.detect(cfg.data)
        let cacheDir = ((cfg.run as NSString).deletingLastPathComponent.isEmpty ? "." : (cfg.run as NSString).deletingLastPathComponent) + "/.cache"
        try fm.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
        let (listing, _) = try source.listing()
        let fp = source.fingerprint(listing, size: nil, channels: nil)
        let name = ((cfg.data as NSString).standardizingPath as NSString).lastPathComponent
        let cached = "\(cacheDir)/\(name)-\(fp).h5"
        if !fm.fileExists(atPath: cached) {
            print("preparing \(cfg.data) into \(cached) (once; reused while the folder is unchanged)")
            let t0 = now()
            try source.prepare(out: cached) { done, total in
                if done % 500 == 0 || done == total { print("  \(done)/\(total) images"); fflush(stdout) }
            }
            print(String(format: "prepared in %.1f s", now() - t0))
        }
        cfg.dataset = cached
    } else {
        cfg.dataset = cfg.data
    }
    let ds = try Dataset(path: cfg.dataset)
    cfg.inChannels = ds.channels
    cfg.numClasses = max(ds.classNames.count, (ds.labels.max() ?? 1) + 1)
    cfg.classNames = ds.classNames
    cfg.mean = ds.mean; cfg.std = ds.std
    if cfg.method == .transfer {
        // Inputs normalised as the source expects: its statistics (averaged over
        // its RGB channels when conv1 is summed to one channel).
        let src = try Transfer.sourceInfo(cfg.pretrained)
        if let a = src.arch, a != cfg.arch.rawValue {
            throw RuntimeError("transfer source '\(cfg.pretrained)' is a \(a), the run asks for --arch \(cfg.arch.rawValue)")
        }
        if cfg.adaptConv1 == "replicate" && ds.channels == 1 {
            cfg.inChannels = src.channels
            cfg.mean = src.mean; cfg.std = src.std
        } else {
            cfg.mean = [src.mean.reduce(0, +) / Double(src.mean.count)]
            cfg.std = [src.std.reduce(0, +) / Double(src.std.count)]
        }
    }
    cfg.datasetFingerprint = ds.fingerprint
    return cfg
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue an interrupted run exactly where its last good checkpoint left it (any number of ranks).")

    @Argument(help: "The run folder (holds config.json and ckpt/).") var runDir: String
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Raise the total number of epochs.") var epochs: Int?
    @Option(help: "Stop after this many epochs of this invocation (0: run to the end).") var stopAfter: Int = 0
    @Flag(help: "One process without MPI, NaN/Inf checks after every step.") var debug = false
    @Flag(inversion: .prefixedNo, help: "End with the evaluation stage on best.h5 when the last epoch is done (source runs of pretrain excepted).")
    var eval = true

    func run() throws {
        try withCommunicator(debug: debug, threads: threading) { comm in
            var cfg = try TrainConfig.load(runDir + "/config.json")
            cfg.run = runDir
            if let e = epochs { cfg.epochs = e }
            cfg.stopAfterEpochs = stopAfter
            guard cfg.batchSize % comm.size == 0 else {
                throw RuntimeError("global batch \(cfg.batchSize) does not split evenly over \(comm.size) ranks")
            }
            if comm.isRoot, epochs != nil { try cfg.save(to: runDir + "/config.json") }
            let trainer = try Trainer(config: cfg, comm: comm, debug: debug, resume: true)
            let before = trainer.state.epoch
            try trainer.run()
            // A source built by pretrain has no val split and is not a CT model: no report.
            let isSource = trainer.dataset.splits["val"] == nil
            if eval && !isSource && before < cfg.epochs { try finalEvaluation(trainer, comm: comm) }
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Metrics of a run's best checkpoint on its test (and val) split; sharded under mpirun.")

    @Argument(help: "The run folder.") var runDir: String
    @Option(help: "Checkpoint file inside ckpt/ (default best.h5).") var checkpoint: String = "best.h5"
    @OptionGroup var threading: ThreadOptions

    @Option(help: "CAM methods for the report: all, or a comma-separated list of \(CAMKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var cams: String = "all"
    @Option(help: "Layer the CAMs explain: layer1...layer4 or a block such as layer4.1.") var layer: String = "layer4"

    func run() throws {
        let kinds = try parseCAMs(cams)
        try withCommunicator(debug: false, threads: threading) { comm in
            var cfg = try TrainConfig.load(runDir + "/config.json")
            cfg.run = runDir
            let trainer = try Trainer(config: cfg, comm: comm, forEvaluation: true)
            let summary = try EvalStage.run(trainer: trainer, comm: comm, checkpoint: "\(runDir)/ckpt/\(checkpoint)", cams: kinds, layer: layer)
            guard comm.isRoot else { return }
            for (name, m) in [("val", summary.val), ("test", summary.test)] where m.count > 0 {
                print(String(format: "%@ (%d images): loss %.4f  accuracy %.4f  sensitivity %.4f  specificity %.4f  precision %.4f  F1 %.4f  AUC %.4f",
                             name, m.count, m.loss, m.accuracy, m.sensitivity, m.specificity, m.precision, m.f1, m.auc))
            }
            print("  test confusion (rows true \(cfg.classNames), columns predicted): \(summary.test.confusion)")
        }
    }
}

func parseCAMs(_ s: String) throws -> [CAMKind] {
    if s == "all" { return CAMKind.allCases }
    return try s.split(separator: ",").map { name in
        guard let k = CAMKind(rawValue: name.trimmingCharacters(in: .whitespaces).lowercased()) else {
            throw ValidationError("unknown CAM method '\(name)'; choose from \(CAMKind.allCases.map(\.rawValue).joined(separator: ", ")) or all")
        }
        return k
    }
}

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn an image folder (CSV splits or class folders; PNG/JPEG) into a disttrain HDF5 data set.")

    @Option(help: "Source folder: train.csv/val.csv/test.csv with filename,label rows, or train/<class>/ (val/, test/) folders.")
    var images: String
    @Option(help: "Output .h5 file.") var out: String
    @Option(help: "Resize every image to this square size (default: keep; all must then match).") var imageSize: Int?
    @Option(help: "Channels to store: 1 (gray) or 3 (RGB); default: as the first image.") var channels: Int?

    func validate() throws {
        if let c = channels, c != 1 && c != 3 { throw ValidationError("--channels must be 1 or 3") }
        if let s = imageSize, s < 8 { throw ValidationError("--image-size must be at least 8") }
    }

    func run() throws {
        let source = try DatasetSource.detect(images)
        let t0 = now()
        try source.prepare(out: out, size: imageSize, channels: channels) { done, total in
            if done % 1000 == 0 || done == total { print("  \(done)/\(total) images"); fflush(stdout) }
        }
        let ds = try Dataset(path: out)
        print(String(format: "wrote %@: %d images %dx%dx%d, classes %@, splits %@ (%.1f s)", out, ds.count, ds.channels, ds.height,
                     ds.width, ds.classNames.joined(separator: "/"),
                     ds.splits.sorted { $0.key > $1.key }.map { "\($0.key) \($0.value.count)" }.joined(separator: ", "), now() - t0))
    }
}

struct ImportWeights: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-weights",
        abstract: "Turn torchvision/timm ResNet weights (.pth zip or .safetensors) into a transfer source (HDF5).",
        discussion: "Handles a state_dict wrapper key and a module. prefix; float16/bfloat16 become float32. Never runs pickled code.")

    @Argument(help: "The weights file (.pth/.pt from torch.save, or .safetensors).") var file: String
    @Option(help: "Output HDF5 source.") var out: String
    @Option(help: "Expected architecture (refused when the file holds another).") var arch: Arch?

    func run() throws {
        let tensors = try PyTorchImport.read(file)
        let (net, loaded, skipped) = try WeightImporter.build(tensors, arch: arch, path: file)
        var cfg = TrainConfig()
        cfg.arch = net.config.arch; cfg.inChannels = net.config.inChannels; cfg.numClasses = net.config.numClasses
        cfg.width = net.config.width; cfg.mean = [0.485, 0.456, 0.406]; cfg.std = [0.229, 0.224, 0.225]
        try Checkpoint.save(out, net: net, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: net.store), state: TrainState(), config: cfg)
        let dtypes = Set(tensors.values.map(\.dtype)).sorted().joined(separator: ", ")
        print("loaded \(loaded.count) tensors (\(dtypes)) as \(net.config.arch.rawValue), \(net.config.inChannels) input channels, \(net.config.numClasses) classes")
        if !skipped.isEmpty { print("skipped \(skipped.count): \(skipped.prefix(8).joined(separator: ", "))\(skipped.count > 8 ? ", ..." : "")") }
        print("wrote \(out); use it with --method transfer --pretrained \(out)")
    }
}
