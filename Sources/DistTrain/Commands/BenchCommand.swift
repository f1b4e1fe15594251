import ArgumentParser
import Foundation
import Net

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps (the training's own step: forward, backward, all-reduce, SGD-momentum update) on synthetic data.",
        discussion: "Prints one line per timed step, then the median images/s and the peak RSS. Use a release build.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Global batch size (split evenly over ranks under mpirun).") var batchSize: Int = 32
    @Option(help: "Untimed warm-up steps.") var warmup: Int = 2
    @Option(help: "Timed steps.") var steps: Int = 8
    @Flag(help: "Print one machine-readable JSON line at the end.") var json = false
    @Option(help: "Gradient all-reduce: overlapped or blocking.") var allreduce: AllreduceMode = .overlapped
    @Option(help: "Gradient bucket size in MiB.") var bucketMb: Double = 25
    @Flag(help: "SyncBatchNorm (statistics over all ranks).") var syncBn = false
    @Flag(help: "Time each kind of work (GEMM, im2col, BatchNorm, ...) over the timed steps.") var profile = false
    @Option(help: ArgumentHelp("Minimum GEMM columns per image group in convolutions (tuning).", visibility: .hidden))
    var gemmColumns: Int?

    func validate() throws {
        guard (1...65_536).contains(batchSize) else { throw ValidationError("--batch-size must be in 1...65536") }
        guard steps >= 1, warmup >= 0 else { throw ValidationError("--steps must be >= 1 and --warmup >= 0") }
        guard bucketMb.isFinite, bucketMb >= 0.001, bucketMb <= 4096 else { throw ValidationError("--bucket-mb must be in 0.001...4096") }
    }

    func run() throws {
        try withCommunicator(threads: threading) { comm in try measure(comm) }
    }

    /// Under mpirun each rank runs batchSize/size images per step, as in training.
    func measure(_ comm: Communicator) throws {
        if let g = gemmColumns { Conv2d.targetColumns = g }
        guard batchSize % comm.size == 0 else { throw RuntimeError("--batch-size \(batchSize) does not split over \(comm.size) ranks") }
        let net = ResNet(model.config)
        net.initialize(seed: 0)
        let step = TrainStep(net: net, optimizer: Optimizer(OptimizerConfig(kind: .sgd, weightDecay: 1e-4), store: net.store), comm: comm,
                             allreduce: allreduce, bucketMiB: bucketMb)
        if syncBn && comm.size > 1 { net.synchroniseBatchNorm { comm.allreduceSum($0, count: $1) } }
        let (x, labels) = syntheticBatch(batch: batchSize / comm.size, channels: model.channels, size: model.imageSize,
                                         classes: model.classes, seed: 1 + UInt64(comm.rank))
        var times: [Double] = [], reduceTimes: [Double] = []
        Profiler.enabled = profile
        for i in 0..<(warmup + steps) {
            comm.barrier()
            let t0 = now()
            let r = try step(x, labels: labels, lr: 0.01)
            comm.barrier()
            let dt = now() - t0
            if i >= warmup { times.append(dt); reduceTimes.append(r.allreduceSeconds) }
            if i == warmup - 1 { Profiler.reset() }
            if comm.isRoot {
                print(String(format: "%@ step %d: %.3f s, %.1f img/s, all-reduce %.1f ms, loss %.4f", i < warmup ? "warm-up" : "timed",
                             i + 1, dt, Double(batchSize) / dt, r.allreduceSeconds * 1000, r.meanLoss))
            }
        }
        guard comm.isRoot else { return }
        report(times: times, reduceTimes: reduceTimes, ranks: comm.size)
    }

    func report(times: [Double], reduceTimes: [Double], ranks: Int) {
        let med = median(times)
        let ips = Double(batchSize) / med
        let rss = peakRSSMiB()
        print(String(format: "disttrain %@ %dch %dx%d global batch %d, %d rank(s) x %d thread(s): median %.3f s/step, %.2f img/s, "
                     + "all-reduce %@ %.1f ms/step after backward, peak RSS %.0f MiB (rank 0)",
                     model.arch.rawValue, model.channels, model.imageSize, model.imageSize, batchSize, ranks, Parallel.threads, med, ips,
                     allreduce.rawValue, median(reduceTimes) * 1000, rss))
        if profile {
            let total = times.reduce(0, +)
            var accounted = 0.0
            func line(_ kind: String, _ t: Double) {
                print("  " + kind.padding(toLength: 22, withPad: " ", startingAt: 0)
                      + String(format: " %7.3f s/step  %5.1f %%", t / Double(steps), 100 * t / total))
            }
            for (kind, t) in Profiler.report() {
                accounted += t
                line(kind, t)
            }
            line("optimizer, all-reduce, other", total - accounted)
        }
        if json {
            print("{\"impl\": \"disttrain\", \"ranks\": \(ranks), \"img_per_s\": \(ips), \"median_step_s\": \(med), "
                  + "\"allreduce\": \"\(allreduce.rawValue)\", \"allreduce_ms\": \(median(reduceTimes) * 1000), \"peak_rss_mib\": \(rss)}")
        }
    }
}
