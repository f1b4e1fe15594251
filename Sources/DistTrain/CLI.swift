import ArgumentParser
import Foundation
import Net

/// The `disttrain` command. Subcommands as DESIGN.md lists them; those of
/// later issues join here as they land.
public struct DistTrainCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "disttrain",
        abstract: "Data-parallel ResNet training on CT slices over MPI, with CAM explanations.",
        subcommands: [Train.self, Resume.self, Eval.self, Report.self, Predict.self, Prepare.self, Pretrain.self, ImportWeights.self, Synth.self, Bench.self, Smoke.self],
        defaultSubcommand: Train.self)

    public init() {}
}

/// Options of every command that builds a network.
struct ModelOptions: ParsableArguments {
    @Option(help: "Architecture: \(Arch.allCases.map(\.rawValue).joined(separator: ", ")).")
    var arch: Arch = .resnet18
    @Option(help: "Input channels (1 for CT slices, 3 for RGB).")
    var channels: Int = 1
    @Option(help: "Number of classes.")
    var classes: Int = 2
    @Option(help: "Height and width of the (square) input.")
    var imageSize: Int = 224
    @Option(help: "Channels of the stem (64 in torchvision; smaller for quick tests).")
    var width: Int = 64

    func validate() throws {
        guard channels >= 1 else { throw ValidationError("--channels must be at least 1") }
        guard classes >= 2 else { throw ValidationError("--classes must be at least 2") }
        guard imageSize >= 32 else { throw ValidationError("--image-size must be at least 32 (ResNet downsamples 32x)") }
        guard width >= 1 else { throw ValidationError("--width must be at least 1") }
    }

    var config: ResNetConfig { ResNetConfig(arch: arch, inChannels: channels, numClasses: classes, width: width) }
}

extension Arch: ExpressibleByArgument {}
extension OptimizerKind: ExpressibleByArgument {}

struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for BLAS and for disttrain's own loops (default: OPENBLAS_NUM_THREADS or all cores).")
    var threads: Int?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func apply() -> Int {
        let env = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init)
        let n = threads ?? env ?? ProcessInfo.processInfo.activeProcessorCount
        Parallel.configure(threads: n)
        return n
    }
}

/// Synthetic inputs and labels, deterministic by seed.
func syntheticBatch(batch: Int, channels: Int, size: Int, classes: Int, seed: UInt64) -> (Tensor, [Int]) {
    var rng = Xoshiro256(seed: seed)
    let x = Tensor([batch, channels, size, size])
    for i in 0..<x.count { x[i] = Float(rng.normal()) }
    let labels = (0..<batch).map { $0 % classes }
    return (x, labels)
}

/// Peak resident set size of this process in MiB (VmHWM).
func peakRSSMiB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    if s.isEmpty { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps (forward, backward, SGD-momentum update) on synthetic data.",
        discussion: "Prints one line per timed step, then the median images/s and the peak RSS. Use a release build.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Batch size.") var batchSize: Int = 32
    @Option(help: "Untimed warm-up steps.") var warmup: Int = 2
    @Option(help: "Timed steps.") var steps: Int = 8
    @Flag(help: "Print one machine-readable JSON line at the end.") var json = false
    @Flag(help: "Time each kind of work (GEMM, im2col, BatchNorm, ...) over the timed steps.") var profile = false
    @Option(help: ArgumentHelp("Minimum GEMM columns per image group in convolutions (tuning).", visibility: .hidden))
    var gemmColumns: Int?

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard steps >= 1, warmup >= 0 else { throw ValidationError("--steps must be >= 1 and --warmup >= 0") }
    }

    func run() throws {
        if MPICommunicator.launchedByMPI {
            let threads = threading.apply()
            let comm = MPICommunicator()
            do { try measure(comm, threads: threads) } catch { comm.abort("\(error)") }
            comm.finalize()
        } else {
            try measure(SingleProcess(), threads: threading.apply())
        }
    }

    /// Under mpirun: each rank runs batchSize/size images per step and the
    /// gradient buffer is all-reduced and averaged, as in training.
    func measure(_ comm: Communicator, threads: Int) throws {
        if let g = gemmColumns { Conv2d.targetColumns = g }
        guard batchSize % comm.size == 0 else { throw RuntimeError("--batch-size \(batchSize) does not split over \(comm.size) ranks") }
        let local = batchSize / comm.size
        let net = ResNet(model.config)
        net.initialize(seed: 0)
        let opt = Optimizer(OptimizerConfig(kind: .sgd, weightDecay: 1e-4), store: net.store)
        let (x, labels) = syntheticBatch(batch: local, channels: model.channels, size: model.imageSize,
                                         classes: model.classes, seed: 1 + UInt64(comm.rank))
        let dlogits = Tensor()
        let ce = CrossEntropy()
        var times: [Double] = [], reduceTimes: [Double] = []
        Profiler.enabled = profile
        let s = net.store
        for step in 0..<(warmup + steps) {
            comm.barrier()
            let t0 = now()
            s.zeroGrads()
            let logits = net.forward(x)
            let loss = ce.forwardBackward(logits: logits, labels: labels, dlogits: dlogits)
            net.backward(dlogits)
            let r0 = now()
            comm.allreduceMean(s.grads, count: s.parameterCount)
            let rt = now() - r0
            opt.step(lr: 0.01)
            comm.barrier()
            let dt = now() - t0
            if step >= warmup { times.append(dt); reduceTimes.append(rt) }
            if step == warmup - 1 { Profiler.reset() }
            if comm.isRoot {
                print(String(format: "%@ step %d: %.3f s, %.1f img/s, all-reduce %.1f ms, loss %.4f", step < warmup ? "warm-up" : "timed",
                             step + 1, dt, Double(batchSize) / dt, rt * 1000, loss))
            }
        }
        guard comm.isRoot else { return }
        let med = median(times)
        let ips = Double(batchSize) / med
        let rss = peakRSSMiB()
        print(String(format: "disttrain %@ %dch %dx%d global batch %d, %d rank(s) x %d thread(s): median %.3f s/step, %.2f img/s, all-reduce %.1f ms/step, peak RSS %.0f MiB (rank 0)",
                     model.arch.rawValue, model.channels, model.imageSize, model.imageSize, batchSize, comm.size, threads, med, ips,
                     median(reduceTimes) * 1000, rss))
        if profile {
            let total = times.reduce(0, +)
            var accounted = 0.0
            for (kind, t) in Profiler.report() {
                accounted += t
                print("  " + kind.padding(toLength: 22, withPad: " ", startingAt: 0)
                      + String(format: " %7.3f s/step  %5.1f %%", t / Double(steps), 100 * t / total))
            }
            print("  " + "optimizer, all-reduce, other".padding(toLength: 22, withPad: " ", startingAt: 0)
                  + String(format: " %7.3f s/step  %5.1f %%", (total - accounted) / Double(steps), 100 * (total - accounted) / total))
        }
        if json {
            print("{\"impl\": \"disttrain\", \"ranks\": \(comm.size), \"img_per_s\": \(ips), \"median_step_s\": \(med), \"allreduce_ms\": \(median(reduceTimes) * 1000), \"peak_rss_mib\": \(rss)}")
        }
    }
}

struct Smoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a ResNet to one synthetic batch and show the loss falling (a quick end-to-end check of the engine).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Batch size.") var batchSize: Int = 8
    @Option(help: "Steps.") var steps: Int = 30
    @Option(help: "Optimizer: sgd or adamw.") var optimizer: OptimizerKind = .sgd
    @Option(help: "Learning rate.") var lr: Double = 0.05
    @Option(help: "Seed of the initialisation and the data.") var seed: UInt64 = 0

    func validate() throws {
        guard batchSize >= 2 else { throw ValidationError("--batch-size must be at least 2 (BatchNorm needs it)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard lr > 0 else { throw ValidationError("--lr must be positive") }
    }

    func run() throws {
        _ = threading.apply()
        let net = ResNet(model.config)
        net.initialize(seed: seed)
        let opt = Optimizer(OptimizerConfig(kind: optimizer), store: net.store)
        let (x, labels) = syntheticBatch(batch: batchSize, channels: model.channels, size: model.imageSize,
                                         classes: model.classes, seed: seed &+ 1)
        let dlogits = Tensor()
        let ce = CrossEntropy()
        var first: Float = 0, last: Float = 0
        for s in 0..<steps {
            let t0 = now()
            net.store.zeroGrads()
            let loss = ce.forwardBackward(logits: net.forward(x), labels: labels, dlogits: dlogits)
            guard loss.isFinite else { throw RuntimeError("loss is \(loss) at step \(s + 1)") }
            net.backward(dlogits)
            opt.step(lr: lr)
            if s == 0 { first = loss }
            last = loss
            print(String(format: "step %3d/%d  loss %.4f  %.1f img/s", s + 1, steps, loss, Double(batchSize) / (now() - t0)))
        }
        print(String(format: "loss %.4f -> %.4f", first, last))
        guard last < first else { throw RuntimeError("the loss did not fall (\(first) -> \(last))") }
    }
}

/// An error from `run()`: one line on stderr, exit code 1.
public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}
