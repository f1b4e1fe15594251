import ArgumentParser
import Foundation
import Net

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps (the training's own step: forward, backward, all-reduce, SGD-momentum update) on synthetic data.",
        discussion: "Prints one line per timed step, then the median images/s and the peak RSS. Use a release build.")

    private static let defaults = TrainConfig()

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Global batch size (split evenly over ranks under mpirun).") var batchSize: Int = defaults.batchSize
    @Option(help: "Untimed warm-up steps.") var warmup: Int = 2
    @Option(help: "Timed steps.") var steps: Int = 8
    @Flag(help: "Print one machine-readable JSON line at the end.") var json = false
    @Option(help: "Gradient all-reduce: overlapped or blocking.") var allreduce: AllreduceMode = defaults.allreduce
    @Option(name: .customLong("bucket-mb"), help: "Gradient bucket size in MiB.") var bucketMiB: Double = defaults.bucketMiB
    @Flag(name: .customLong("sync-bn"), help: "SyncBatchNorm (statistics over all ranks).") var syncBatchNorm = defaults.syncBatchNorm
    @Flag(help: "Time each kind of work (GEMM, im2col, BatchNorm, ...) over the timed steps.") var profile = false
    @Option(help: ArgumentHelp("Minimum GEMM columns per image group in convolutions (tuning).", visibility: .hidden))
    var gemmColumns: Int?
    @Option(help: "GEMM precision: fp32 or bf16 (needs AVX512-BF16).") var precision: Precision = defaults.precision
    @Flag(help: "Instead of training steps: GFLOP/s of one core's fp32 GEMM (OpenBLAS) and bf16 GEMM on ResNet-18's shapes.")
    var gemm = false

    /// The training run bench times steps of, checked by the rows `train` is checked by.
    var config: TrainConfig {
        var c = model.applied(to: Bench.defaults)
        c.batchSize = batchSize; c.allreduce = allreduce; c.bucketMiB = bucketMiB; c.syncBatchNorm = syncBatchNorm; c.precision = precision
        return c
    }

    func validate() throws {
        if let first = config.problems(naming: ModelOptions.names).first { throw ValidationError(first) }
        guard steps >= 1, warmup >= 0 else { throw ValidationError("--steps must be >= 1 and --warmup >= 0") }
    }

    func run() throws {
        if gemm { return try gemmTable() }
        try withCommunicator(threads: threading) { comm in try measure(comm) }
    }

    /// One core: each of ResNet-18's convolution GEMMs at 224 px (forward, weight
    /// gradient, input gradient), fp32 through OpenBLAS and bf16 through our
    /// kernel, median of 5 timings of at least 0.2 s.
    func gemmTable() throws {
        BLAS.setThreads(1)
        guard BF16.supported else { throw RuntimeError("this CPU has no AVX512-BF16: there is no bf16 GEMM to time") }
        // (name, transA, transB, M, N, K): forward y = W col, dW = dy col^T, dcol = W^T dy.
        var shapes: [(String, Bool, Bool, Int, Int, Int)] = []
        for (name, oc, k, p) in [("layer1", 64, 576, 3136), ("layer2", 128, 1152, 784), ("layer3", 256, 2304, 784), ("layer4", 512, 4608, 784)] {
            shapes += [("\(name) fwd", false, false, oc, p, k), ("\(name) dW", false, true, oc, k, p), ("\(name) dX", true, false, k, p, oc)]
        }
        print("shape          M     N     K   fp32 GFLOP/s   bf16 GFLOP/s   bf16/fp32")
        var ratios: [Double] = []
        for (name, ta, tb, M, N, K) in shapes {
            var rng = Xoshiro256(seed: 1)
            let a = (0..<(M * K)).map { _ in Float(rng.uniform(-1, 1)) }, b = (0..<(K * N)).map { _ in Float(rng.uniform(-1, 1)) }
            var c = [Float](repeating: 0, count: M * N)
            func time(_ body: () -> Void) -> Double {
                var samples: [Double] = []
                for _ in 0..<5 {
                    var reps = 0
                    let t0 = now()
                    repeat { body(); reps += 1 } while now() - t0 < 0.2
                    samples.append(2 * Double(M * N * K) * Double(reps) / (now() - t0) / 1e9)
                }
                return samples.sorted()[2]
            }
            let lda = ta ? M : K, ldb = tb ? K : N
            let fp32 = time {
                BLAS.gemm1(transA: ta, transB: tb, M: M, N: N, K: K, A: a, lda: lda, B: b, ldb: ldb, C: &c, ldc: N)
            }
            let bf16 = time {
                BF16.gemm(transA: ta, transB: tb, M: M, N: N, K: K, A: a, lda: lda, B: b, ldb: ldb, beta: 0, C: &c, ldc: N)
            }
            ratios.append(bf16 / fp32)
            print(String(format: "%-12@ %5d %5d %5d   %12.1f   %12.1f   %9.2f", name, M, N, K, fp32, bf16, bf16 / fp32))
        }
        print(String(format: "median bf16/fp32: %.2f", ratios.sorted()[ratios.count / 2]))
    }

    /// The convolutions' rate against the GEMM roof of this machine's threads,
    /// measured now: the faster of the engine's threads' count of independent one-core GEMMs
    /// (1024^3) side by side (fp32 through OpenBLAS, bf16 through our AVX512-BF16
    /// kernel) and one oneDNN matmul (2048^3) on all threads (its brgemm kernels are
    /// those of the convolutions). Convolution FLOPs are counted as a direct
    /// convolution's (2 per multiply-add): Winograd does fewer, so its rate can pass the roof.
    func convolutionRoof(seconds: Double, _ net: ResNet) {
        guard seconds > 0 else { return }
        let T = net.engine.threads, n = 1024, convFlops = net.profiler.convFlops, precision = net.engine.precision
        func roof(_ bf16: Bool) -> Double {
            var rng = Xoshiro256(seed: 3)
            let a = (0..<(n * n)).map { _ in Float(rng.uniform(-1, 1)) }
            var cs = [[Float]](repeating: [Float](repeating: 0, count: n * n), count: T)
            var best = 0.0
            for _ in 0..<3 {
                let t0 = now()
                cs.withUnsafeMutableBufferPointer { bufs in
                    DispatchQueue.concurrentPerform(iterations: T) { k in
                        bufs[k].withUnsafeMutableBufferPointer { c in
                            if bf16 {
                                BF16.gemm(M: n, N: n, K: n, A: a, lda: n, B: a, ldb: n, beta: 0, C: c.baseAddress!, ldc: n)
                            } else {
                                BLAS.gemm1(M: n, N: n, K: n, A: a, lda: n, B: a, ldb: n, C: c.baseAddress!, ldc: n)
                            }
                        }
                    }
                }
                best = max(best, 2 * Double(n * n * n) * Double(T) / (now() - t0) / 1e9)
            }
            return best
        }
        func oneDNN(_ bf16: Bool) -> Double { Conv2d.oneDNNMatmulGFLOPs(n: 2048, bf16: bf16) }
        let rate = convFlops / seconds / 1e9
        let fp32 = (ours: roof(false), dnnl: oneDNN(false))
        let bf16 = BF16.supported ? (ours: roof(true), dnnl: oneDNN(true)) : (ours: 0.0, dnnl: 0.0)
        let mine = precision == .bf16 ? bf16 : fp32
        print(String(format: "  convolutions: %.0f GFLOP/s (direct-convolution FLOPs, %.0f per step), %.0f %% of the %@ GEMM roof", rate,
                     convFlops / Double(steps) / 1e9, 100 * rate / max(mine.ours, mine.dnnl), precision.rawValue))
        print(String(format: "  GEMM roof on %d thread(s), measured now: fp32 %.0f GFLOP/s (OpenBLAS; oneDNN matmul %.0f), bf16 %@", T,
                     fp32.ours, fp32.dnnl, BF16.supported ? String(format: "%.0f GFLOP/s (our AVX512-BF16 kernel; oneDNN matmul %.0f)",
                                                                   bf16.ours, bf16.dnnl) : "none (no AVX512-BF16)"))
    }

    /// Under mpirun each rank runs batchSize/size images per step, as in training.
    func measure(_ comm: Communicator) throws {
        var settings = threading.settings
        settings.profiling = profile
        settings.gemmColumns = gemmColumns
        let engine = try settings.engine(precision)
        guard batchSize % comm.size == 0 else { throw RuntimeError("--batch-size \(batchSize) does not split over \(comm.size) ranks") }
        let net = ResNet(config.netConfig, engine: engine)
        net.initialize(seed: 0)
        let step = TrainStep(net: net, optimizer: Optimizer(OptimizerConfig(kind: .sgd, weightDecay: 1e-4), store: net.store), comm: comm,
                             allreduce: allreduce, bucketMiB: bucketMiB)
        if syncBatchNorm && comm.size > 1 { net.synchroniseBatchNorm { comm.allreduceSum($0, count: $1) } }
        let (x, labels) = syntheticBatch(batch: batchSize / comm.size, channels: model.inChannels, size: model.imageSize,
                                         classes: model.numClasses, seed: 1 + UInt64(comm.rank))
        var times: [Double] = [], reduceTimes: [Double] = []
        for i in 0..<(warmup + steps) {
            comm.barrier()
            let t0 = now()
            let r = try step(x, labels: labels, lr: 0.01)
            comm.barrier()
            let dt = now() - t0
            if i >= warmup { times.append(dt); reduceTimes.append(r.allreduceSeconds) }
            if i == warmup - 1 { net.profiler.reset() }
            if comm.isRoot {
                print(String(format: "%@ step %d: %.3f s, %.1f img/s, all-reduce %.1f ms, loss %.4f", i < warmup ? "warm-up" : "timed",
                             i + 1, dt, Double(batchSize) / dt, r.allreduceSeconds * 1000, r.meanLoss))
            }
        }
        guard comm.isRoot else { return }
        report(times: times, reduceTimes: reduceTimes, ranks: comm.size, net)
    }

    func report(times: [Double], reduceTimes: [Double], ranks: Int, _ net: ResNet) {
        let med = median(times)
        let ips = Double(batchSize) / med
        let rss = peakRSSMiB()
        print(String(format: "disttrain %@ %dch %dx%d global batch %d, %d rank(s) x %d thread(s): median %.3f s/step, %.2f img/s, "
                     + "all-reduce %@ %.1f ms/step after backward, peak RSS %.0f MiB (rank 0)",
                     model.arch.rawValue, model.inChannels, model.imageSize, model.imageSize, batchSize, ranks, net.engine.threads, med, ips,
                     allreduce.rawValue, median(reduceTimes) * 1000, rss))
        if profile {
            let total = times.reduce(0, +)
            var accounted = 0.0
            func line(_ kind: String, _ t: Double) {
                print("  " + kind.padding(toLength: 22, withPad: " ", startingAt: 0)
                      + String(format: " %7.3f s/step  %5.1f %%", t / Double(steps), 100 * t / total))
            }
            for (kind, t) in net.profiler.report() {
                accounted += t
                line(kind, t)
            }
            line("optimizer, all-reduce, other", total - accounted)
            let kinds: [Profiler.Kind] = [.dnnlConv, .convGemm, .im2col, .staging, .winograd]
            convolutionRoof(seconds: kinds.map(net.profiler.seconds).reduce(0, +), net)
        }
        if json {
            print("{\"impl\": \"disttrain\", \"ranks\": \(ranks), \"img_per_s\": \(ips), \"median_step_s\": \(med), "
                  + "\"allreduce\": \"\(allreduce.rawValue)\", \"allreduce_ms\": \(median(reduceTimes) * 1000), \"peak_rss_mib\": \(rss)}")
        }
    }
}
