import ArgumentParser
import Cams
import Foundation
import Net

// Option groups shared by several commands.

/// Options of every command that builds a network without a run folder (bench, smoke):
/// the fields of `TrainConfig` that a data set fills for `train`, checked by their rows
/// in `TrainConfig.settings` under these options' names.
struct ModelOptions: ParsableArguments {
    private static let defaults = TrainConfig()

    @Option(help: "Architecture: \(Arch.allCases.map(\.rawValue).joined(separator: ", ")).")
    var arch: Arch = defaults.arch
    @Option(name: .customLong("channels"), help: "Input channels (1 for CT slices, 3 for RGB).")
    var inChannels: Int = defaults.inChannels
    @Option(name: .customLong("classes"), help: "Number of classes.")
    var numClasses: Int = defaults.numClasses
    @Option(help: "Height and width of the (square) input.")
    var imageSize: Int = defaults.imageSize
    @Option(help: "Channels of the stem (64 in torchvision; smaller for quick tests).")
    var width: Int = defaults.width

    /// How the problems of a config built from these options name its fields.
    static let names: [PartialKeyPath<TrainConfig>: String] = [\.inChannels: "--channels", \.numClasses: "--classes"]

    /// `config` with these options' fields set.
    func applied(to config: TrainConfig) -> TrainConfig {
        var c = config
        c.arch = arch; c.inChannels = inChannels; c.numClasses = numClasses; c.imageSize = imageSize; c.width = width
        return c
    }

    func validate() throws {
        // Narrower than numClasses' range: over one class the cross-entropy is 0 whatever the
        // weights, so there is nothing for smoke to fit or for bench to time.
        guard numClasses >= 2 else { throw ValidationError("--classes must be at least 2") }
    }
}

struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for BLAS and for disttrain's own loops (default: OPENBLAS_NUM_THREADS or all cores).")
    var threads: Int?

    /// More threads than 4 per core only oversubscribe (every loop and GEMM splits over them); 256 at
    /// least, so a job script written for a large node still runs on a small one. --threads 100000
    /// crashed in libgomp (SIGSEGV) as it started its pool.
    static var maxThreads: Int { max(256, 4 * ProcessInfo.processInfo.activeProcessorCount) }

    func validate() throws {
        let limit = ThreadOptions.maxThreads
        if let t = threads {
            guard (1...limit).contains(t) else { throw ValidationError("--threads must be in 1...\(limit) (4 per core, at least 256)") }
        } else if let text = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"], let t = Int(text), t > limit {
            // The default when --threads is not given: the same bound (0 or less reads as 1, as before).
            throw ValidationError("OPENBLAS_NUM_THREADS=\(text) (the default of --threads) must be at most \(limit)")
        }
    }

    /// --threads, else OPENBLAS_NUM_THREADS, else every core.
    var count: Int {
        threads ?? ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount
    }

    /// The C libraries' process-wide thread counts, once at start-up (`Engine.configureLibraries`); returns `count`.
    @discardableResult
    func apply() -> Int {
        let n = count
        Engine.configureLibraries(threads: n)
        return n
    }

    /// This command line's engine settings: `count` threads, the backend DISTTRAIN_CONV names.
    var settings: EngineSettings { EngineSettings(threads: count) }
}

/// How a training invocation runs: `train` and `resume` alike.
struct SessionOptions: ParsableArguments {
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Stop after this many epochs of this invocation (0: run to the end); resume continues.")
    var stopAfter: Int = 0
    @Flag(help: "One process without MPI, NaN/Inf checks after every step, a line per step.")
    var debug = false
    @Flag(inversion: .prefixedNo, help: "End with the evaluation stage of `disttrain eval` on best.h5 when the last epoch is done.")
    var eval = true

    func validate() throws {
        if let problem = TrainConfig.problem(\.stopAfterEpochs, stopAfter) { throw ValidationError(problem) }
    }
}

/// Images are refused above a size before they are decoded (a 300-byte JPEG may claim 30000 x 30000).
struct ImageLimitOptions: ParsableArguments {
    @Option(help: "Largest image accepted, in pixels (width x height), checked before decoding.")
    var maxPixels: Int = RasterImage.defaultMaxPixels

    func validate() throws {
        guard maxPixels >= 1 else { throw ValidationError("--max-pixels must be at least 1") }
    }
}

/// Options of the commands that explain a model (eval, predict).
struct CAMOptions: ParsableArguments {
    @Option(help: """
        CAM methods: all, none, or a comma-separated list of \(CAMKind.allCases.map(\.rawValue).joined(separator: ", ")).
        """)
    var cams: String = "all"
    @Option(help: "Checkpoint file inside the run's ckpt/ folder.") var checkpoint: String = "best.h5"

    func validate() throws { _ = try kinds() }

    func kinds() throws -> [CAMKind] {
        if cams == "all" { return CAMKind.allCases }
        if cams == "none" { return [] }
        return try cams.split(separator: ",").map { name in
            guard let k = CAMKind(rawValue: name.trimmingCharacters(in: .whitespaces).lowercased()) else {
                let known = CAMKind.allCases.map(\.rawValue).joined(separator: ", ")
                throw ValidationError("unknown CAM method '\(name)'; choose from \(known), all or none")
            }
            return k
        }
    }
}
