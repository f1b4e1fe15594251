import Foundation
import Net

/// Prints on rank 0 only: a refreshed line on a terminal, plain lines in logs.
public struct Console {
    public let enabled: Bool
    /// --debug: a line for every step.
    public var verbose = false
    // Under mpirun a rank's stdout is a pseudo-terminal even when mpirun's own
    // output goes to a file, so ranks print plain lines.
    let tty = isatty(STDOUT_FILENO) != 0 && !MPICommunicator.launchedByMPI
    public init(enabled: Bool) { self.enabled = enabled }
    public func line(_ s: String) {
        guard enabled else { return }
        print(tty ? "\r\u{1B}[K" + s : s)
        fflush(stdout)
    }
    public func progress(_ s: String, step: Int, of total: Int) {
        guard enabled else { return }
        if tty {
            print("\r\u{1B}[K" + s, terminator: "")
            fflush(stdout)
        } else if verbose || step == total || step % max(1, total / 5) == 0 {
            print(s)
            fflush(stdout)
        }
    }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
}

/// Data-parallel training (DESIGN.md "The shape"): every rank holds the whole
/// model; each step it runs forward and backward on its slice of the global
/// batch, the gradient buffer is all-reduced and averaged, and every rank takes
/// the same optimizer step. Rank 0 alone writes checkpoints and metrics.
public final class Trainer {
    public let config: TrainConfig
    let comm: Communicator
    public let dataset: Dataset
    public let net: ResNet
    public let optimizer: Optimizer
    public private(set) var state = TrainState()
    var metrics: MetricsLog
    let debug: Bool
    let console: Console
    public let batchMaker: BatchMaker
    let x = Tensor(), dlogits = Tensor()

    public var runDir: String { config.run }
    var ckptDir: String { config.run + "/ckpt" }

    /// Sets up a new run (`resume == false`) or continues one from its newest
    /// good checkpoint. Rank 0 decides; everything is broadcast. `forEvaluation`:
    /// the caller loads a checkpoint, so a transfer run's source is not read (it
    /// may be gone).
    public init(config cfg: TrainConfig, comm: Communicator, debug: Bool = false, resume: Bool = false,
                forEvaluation: Bool = false) throws {
        self.comm = comm
        self.debug = debug
        var console = Console(enabled: comm.isRoot)
        console.verbose = debug
        self.console = console
        dataset = try Dataset(path: cfg.dataset)
        config = cfg
        net = ResNet(cfg.netConfig)
        var ocfg = OptimizerConfig(kind: cfg.optimizer, weightDecay: cfg.weightDecay)
        ocfg.momentum = cfg.momentum
        optimizer = Optimizer(ocfg, store: net.store)
        batchMaker = BatchMaker(dataset: dataset, size: cfg.imageSize, outChannels: cfg.inChannels,
                                mean: cfg.mean.isEmpty ? nil : cfg.mean, std: cfg.std.isEmpty ? nil : cfg.std)
        metrics = MetricsLog(dir: cfg.run)
        if comm.isRoot {
            if resume {
                state = try loadNewestGood()
                metrics = MetricsLog.load(dir: cfg.run, upTo: state.epoch)
            } else {
                net.initialize(seed: cfg.seed)
                if cfg.method == .transfer && !forEvaluation {
                    let report = try Transfer.loadSource(cfg.pretrained, into: net, adapt: cfg.adaptConv1)
                    console.line(report)
                }
            }
        }
        try broadcastEverything()
    }

    /// last.h5, else the newest readable epoch file (saying so).
    func loadNewestGood() throws -> TrainState {
        let candidates = [ckptDir + "/last.h5"] + Checkpoint.epochFiles(ckptDir)
        var problems: [String] = []
        for path in candidates where FileManager.default.fileExists(atPath: path) {
            do {
                let st = try Checkpoint.load(path, into: net, optimizer: optimizer)
                if !problems.isEmpty {
                    console.line("warning: \(problems.joined(separator: "; ")); resuming from \((path as NSString).lastPathComponent)")
                }
                console.line("resuming \(config.run) after epoch \(st.epoch) (step \(st.step)) from \((path as NSString).lastPathComponent)")
                return st
            } catch {
                problems.append("\((path as NSString).lastPathComponent) is unusable (\(error))")
            }
        }
        throw RuntimeError(problems.isEmpty ? "no checkpoint in '\(ckptDir)' to resume from"
                                            : "no usable checkpoint in '\(ckptDir)': \(problems.joined(separator: "; "))")
    }

    /// Parameters, buffers, counters, optimizer state and step counts from rank 0,
    /// each a contiguous block laid out in torchvision name order.
    func broadcastEverything() throws {
        guard comm.size > 1 else { return }
        let s = net.store
        comm.broadcast(UnsafeMutableRawPointer(s.values), bytes: s.parameterCount * 4)
        comm.broadcast(UnsafeMutableRawPointer(s.buffers), bytes: s.bufferCount * 4)
        comm.broadcast(UnsafeMutableRawPointer(s.counters), bytes: s.counterCount * 8)
        comm.broadcast(UnsafeMutableRawPointer(optimizer.state1), bytes: s.parameterCount * 4)
        comm.broadcast(UnsafeMutableRawPointer(optimizer.state2), bytes: s.parameterCount * 4)
        var steps = optimizer.steps
        comm.broadcast(&steps)
        optimizer.steps = steps
        var st = [Int64(state.epoch), Int64(state.step), Int64(state.bestEpoch),
                  Int64(bitPattern: state.bestValLoss.bitPattern), Int64(bitPattern: state.bestValAccuracy.bitPattern)]
        comm.broadcast(&st)
        state.epoch = Int(st[0]); state.step = Int(st[1]); state.bestEpoch = Int(st[2])
        state.bestValLoss = Double(bitPattern: UInt64(bitPattern: st[3]))
        state.bestValAccuracy = Double(bitPattern: UInt64(bitPattern: st[4]))
    }

    var trainSplit: [Int] { dataset.splits["train"] ?? [] }

    public var sampler: ShardSampler {
        ShardSampler(count: trainSplit.count, batchSize: config.batchSize, rank: comm.rank, size: comm.size, seed: config.seed)
    }

    public var schedule: LRSchedule {
        let spe = max(sampler.stepsPerEpoch, 1)
        var s = LRSchedule(kind: config.schedule, base: Float(config.lr), totalSteps: config.epochs * spe,
                           warmupSteps: Int(config.warmupEpochs * Double(spe)))
        s.stepEvery = max(1, config.epochs / 3) * spe
        return s
    }

    // MARK: the loop

    /// Trains from the epoch after the last completed one to `config.epochs`.
    public func run() throws {
        let start = state.epoch + 1
        guard start <= config.epochs else {
            console.line("\(config.run): all \(config.epochs) epochs are done")
            return
        }
        if comm.isRoot { try FileManager.default.createDirectory(atPath: ckptDir, withIntermediateDirectories: true) }
        console.line("training \(config.arch.rawValue) (\(config.method.rawValue)) on \(trainSplit.count) images, "
            + "\(comm.size) rank(s) x \(Parallel.threads) thread(s), global batch \(config.batchSize), "
            + "\(sampler.stepsPerEpoch) steps/epoch, epochs \(start)...\(config.epochs)")
        var done = 0
        for epoch in start...config.epochs {
            let t0 = now()
            let (loss, acc, ips, lr) = try trainEpoch(epoch)
            averageBatchNormStatistics()
            try checkReplicas(epoch: epoch)
            let val = try evaluate("val")
            let test = try evaluate("test")
            let seconds = now() - t0
            let rss = peakRSSPerRank()
            state.epoch = epoch
            // Best on validation (loss, then accuracy); without a val split, the latest.
            let better = val.count == 0
                || val.loss < state.bestValLoss || (val.loss == state.bestValLoss && val.accuracy > state.bestValAccuracy)
            if better {
                state.bestValLoss = val.count > 0 ? val.loss : state.bestValLoss
                state.bestValAccuracy = val.count > 0 ? val.accuracy : state.bestValAccuracy
                state.bestEpoch = epoch
            }
            if comm.isRoot {
                try metrics.append(EpochRow(epoch: epoch, trainLoss: loss, trainAccuracy: acc, val: val, test: test,
                                            lr: lr, seconds: seconds, imagesPerSecond: ips, peakRSSMiB: rss.max() ?? .nan))
                try saveCheckpoints(epoch: epoch, best: state.bestEpoch == epoch)
                console.line(String(format: "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | test loss %.4f acc %.4f auc %.4f | %.1f img/s, %@, peak RSS %@ MiB%@",
                                    epoch, config.epochs, loss, acc, val.loss, val.accuracy, test.loss, test.accuracy, test.auc,
                                    ips, formatDuration(seconds), rss.map { String(format: "%.0f", $0) }.joined(separator: "/"),
                                    state.bestEpoch == epoch ? "  (best)" : ""))
            }
            comm.barrier()
            done += 1
            if config.stopAfterEpochs > 0 && done >= config.stopAfterEpochs && epoch < config.epochs {
                console.line("stopping after \(done) epoch(s) as asked; continue with `disttrain resume \(config.run)`")
                break
            }
        }
    }

    /// Peak resident set size of every rank so far, MiB, in rank order (collective).
    func peakRSSPerRank() -> [Double] {
        var v = [Double](repeating: 0, count: comm.size)
        v[comm.rank] = peakRSSMiB()
        comm.allreduceSum(&v)
        return v
    }

    /// One epoch; returns global train loss, accuracy, images/s and the last lr.
    func trainEpoch(_ epoch: Int) throws -> (Double, Double, Double, Double) {
        net.setTraining(!config.frozenBatchNormStatistics)
        if config.method == .transfer { applyTransferPhase(epoch) }
        let sampler = self.sampler, schedule = self.schedule
        let perm = sampler.permutation(epoch: epoch)
        let split = trainSplit
        let ce = CrossEntropy(labelSmoothing: Float(config.labelSmoothing))
        let steps = sampler.stepsPerEpoch
        guard steps > 0 else {
            throw RuntimeError("the train split has \(split.count) images, fewer than one global batch of \(config.batchSize)")
        }
        let s = net.store
        var lossSum = 0.0, correct = 0.0, seen = 0.0, lr = 0.0
        let t0 = now()
        for step in 0..<steps {
            let indices = sampler.localIndices(epoch: epoch, step: step, permutation: perm).map { split[$0] }
            let labels = try batchMaker.batch(dataset, indices, into: x, seed: config.seed, augmentEpoch: config.augment ? epoch : nil)
            s.zeroGrads()
            let logits = net.forward(x)
            let loss = ce.forwardBackward(logits: logits, labels: labels, dlogits: dlogits)
            net.backward(dlogits)
            comm.allreduceMean(s.grads, count: s.parameterCount)
            var stats = [Double(loss) * Double(labels.count), Double(countCorrect(logits, labels)), Double(labels.count)]
            comm.allreduceSum(&stats)
            let globalLoss = stats[0] / stats[2]
            guard globalLoss.isFinite else {
                throw RuntimeError("loss is \(globalLoss) at epoch \(epoch), step \(step + 1); the last good checkpoint is kept in \(ckptDir)")
            }
            if debug { try checkFinite(epoch: epoch, step: step + 1) }
            lr = Double(schedule.lr(at: state.step))
            optimizer.step(lr: lr)
            state.step += 1
            lossSum += stats[0]; correct += stats[1]; seen += stats[2]
            let elapsed = now() - t0, ips = seen / elapsed
            let eta = elapsed / Double(step + 1) * Double(steps - step - 1)
            var line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  acc %.3f  lr %.2e  %.1f img/s  ETA %@",
                              epoch, config.epochs, step + 1, steps, lossSum / seen, correct / seen, lr, ips, formatDuration(eta))
            if debug {
                var g2 = 0.0
                for i in 0..<s.parameterCount { g2 += Double(s.grads[i]) * Double(s.grads[i]) }
                line += String(format: "  step loss %.4f  |grad| %.4e", globalLoss, g2.squareRoot())
            }
            console.progress(line, step: step + 1, of: steps)
        }
        return (lossSum / seen, correct / seen, seen / (now() - t0), lr)
    }

    /// Epochs 1...freezeEpochs train the head alone (backbone weights frozen,
    /// its BN in eval mode); later epochs train everything, the backbone at
    /// backboneLRScale x the learning rate. A function of the epoch, so a
    /// resumed run lands in the right phase.
    func applyTransferPhase(_ epoch: Int) {
        let backbone = ["conv1", "bn1", "layer"]
        let s = net.store
        if epoch <= config.freezeEpochs {
            s.setFrozen(true, prefixes: backbone)
            net.freezeBatchNorm(prefixes: ["bn1", "layer"])
            optimizer.setLRScale(1, prefixes: [""])
            if epoch == state.epoch + 1 || epoch == 1 { console.line("epoch \(epoch): training the head alone (backbone frozen)") }
        } else {
            s.setFrozen(false, prefixes: [""])
            optimizer.setLRScale(Float(config.backboneLRScale), prefixes: backbone)
            optimizer.setLRScale(1, prefixes: ["fc."])
            if epoch == config.freezeEpochs + 1 {
                console.line("epoch \(epoch): training everything, backbone at \(config.backboneLRScale) x lr")
            }
        }
    }

    func countCorrect(_ logits: Tensor, _ labels: [Int]) -> Int {
        let K = logits.shape[1]
        var c = 0
        for (n, y) in labels.enumerated() {
            var best = 0
            for k in 1..<K where logits[n * K + k] > logits[n * K + best] { best = k }
            if best == y { c += 1 }
        }
        return c
    }

    /// --debug: every parameter and gradient finite after each step.
    func checkFinite(epoch: Int, step: Int) throws {
        let s = net.store
        for e in s.namedParameters() {
            let g = s.gradPointer(e), p = s.pointer(e)
            for i in 0..<e.count where !g[i].isFinite || !p[i].isFinite {
                throw RuntimeError("non-finite \(g[i].isFinite ? "value" : "gradient") in '\(e.name)'[\(i)] at epoch \(epoch), step \(step)")
            }
        }
    }

    /// BN running statistics are per-rank buffers (each rank saw its own
    /// batches): average them before evaluating or saving, as DDP users must.
    func averageBatchNormStatistics() {
        comm.allreduceMean(net.store.buffers, count: net.store.bufferCount)
    }

    /// Replicas must hold the same parameters; a mismatch stops the job.
    func checkReplicas(epoch: Int) throws {
        guard comm.size > 1 else { return }
        let (sum, abs) = net.store.checksum()
        let hi = comm.allreduceMax(sum), lo = -comm.allreduceMax(-sum)
        if hi != lo {
            throw RuntimeError("replicas diverged after epoch \(epoch): parameter checksums range \(lo)...\(hi) (|x| sum \(abs) here)")
        }
    }

    /// Metrics of a split, evaluated sharded (position k goes to rank k % size)
    /// and combined by all-reducing per-sample arrays.
    public func evaluate(_ name: String) throws -> SplitMetrics { try evaluateDetailed(name).metrics }

    /// Metrics plus every sample's label and class-1 score (for ROC curves).
    public func evaluateDetailed(_ name: String) throws -> (metrics: SplitMetrics, labels: [Int], scores: [Double]) {
        guard let split = dataset.splits[name], !split.isEmpty else { return (SplitMetrics(), [], []) }
        net.setTraining(false)
        defer { net.setTraining(true) }
        let n = split.count, K = config.numClasses
        var scores = [Double](repeating: 0, count: n), preds = [Double](repeating: 0, count: n), losses = [Double](repeating: 0, count: n)
        let mine = (0..<n).filter { $0 % comm.size == comm.rank }
        var start = 0
        while start < mine.count {
            let chunk = Array(mine[start..<min(start + config.evalBatchSize, mine.count)])
            let labels = try batchMaker.batch(dataset, chunk.map { split[$0] }, into: x, seed: config.seed, augmentEpoch: nil)
            let logits = net.forward(x)
            let probs = softmax(logits)
            for (j, pos) in chunk.enumerated() {
                let p = probs[j]
                scores[pos] = Double(K == 2 ? p[1] : p.max()!)
                preds[pos] = Double(p.indices.max { p[$0] < p[$1] }!)
                losses[pos] = -log(max(Double(p[labels[j]]), 1e-30))
            }
            start += chunk.count
        }
        comm.allreduceSum(&scores); comm.allreduceSum(&preds); comm.allreduceSum(&losses)
        let labels = split.map { dataset.labels[$0] }
        return (SplitMetrics(lossSum: losses.reduce(0, +), labels: labels, predictions: preds.map { Int($0) }, scores: scores, classes: K),
                labels, scores)
    }

    /// epoch-NNNN.h5, then last.h5 (and best.h5) as copies written the same
    /// safe way; only the newest `keepCheckpoints` epoch files stay.
    func saveCheckpoints(epoch: Int, best: Bool) throws {
        let file = String(format: "%@/epoch-%04d.h5", ckptDir, epoch)
        try Checkpoint.save(file, net: net, optimizer: optimizer, state: state, config: config)
        for target in ["last.h5"] + (best ? ["best.h5"] : []) {
            let tmp = "\(ckptDir)/\(target).tmp"
            try? FileManager.default.removeItem(atPath: tmp)
            try FileManager.default.copyItem(atPath: file, toPath: tmp)
            try durableRename(tmp, "\(ckptDir)/\(target)")
        }
        for old in Checkpoint.epochFiles(ckptDir).dropFirst(max(config.keepCheckpoints, 1)) {
            try? FileManager.default.removeItem(atPath: old)
        }
    }
}
