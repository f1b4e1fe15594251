import ArgumentParser
import Net

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build a transfer source: supervised training on another data set (default CIFAR-10), under mpirun like train.",
        discussion: "Writes a run folder whose ckpt/last.h5 is the source: torchvision keys, 3-channel conv1, 10-class fc.")

    static let defaultData = "../shared/data/cifar-10"
    static let defaultEpochs = 15

    /// The recipe of a CIFAR-10 source; the options below override parts of it.
    static func defaultConfig(arch: Arch) -> TrainConfig {
        var c = TrainConfig()
        c.arch = arch; c.data = defaultData; c.run = "checkpoints/source-cifar10"
        c.imageSize = 32; c.epochs = defaultEpochs; c.batchSize = 128; c.lr = 0.1; c.weightDecay = 5e-4
        c.warmupEpochs = 1; c.labelSmoothing = 0.1; c.evalBatchSize = 250
        return c
    }
    private static let defaults = defaultConfig(arch: .resnet18)

    @Option(help: "Source data: class folders train/<class>/ (and test/), or a prepared .h5.") var data: String = defaults.data
    @Option(help: "Architecture.") var arch: Arch = defaults.arch
    @Option(name: .customLong("run"), help: "Run folder.") var runDir: String = defaults.run
    @Option(help: "Resolution (32 = CIFAR's own; 64 or 96 upsample, 4x / 9x the cost).") var imageSize: Int = defaults.imageSize
    @Option(help: "Epochs.") var epochs: Int = defaults.epochs
    @Option(help: "Global batch.") var batchSize: Int = defaults.batchSize
    @Option(help: "Peak learning rate.") var lr: Double = defaults.lr
    @Option(help: "Seed.") var seed: UInt64 = defaults.seed
    @Option(help: "GEMM precision: fp32 or bf16 (needs AVX512-BF16).") var precision: Precision = defaults.precision
    @OptionGroup var threading: ThreadOptions

    var config: TrainConfig {
        var c = Pretrain.defaultConfig(arch: arch)
        c.data = data; c.run = runDir; c.imageSize = imageSize; c.epochs = epochs; c.batchSize = batchSize; c.lr = lr; c.seed = seed; c.precision = precision
        return c
    }

    func validate() throws {
        if let first = config.problems().first { throw ValidationError(first) }
    }

    func run() throws {
        try withCommunicator(threads: threading) { comm in
            let t0 = now()
            try startTraining(config, comm: comm, debug: false, evaluate: false, settings: threading.settings)
            if comm.isRoot {
                print("source ready: \(runDir)/ckpt/last.h5 (\(formatDuration(now() - t0)) wall-clock); "
                      + "use it with --method transfer --pretrained \(runDir)/ckpt/last.h5")
            }
        }
    }
}
