import Foundation
import Net

/// Data-parallel training (DESIGN.md "The shape"): every rank holds the whole
/// model; each step it runs forward and backward on its slice of the global
/// batch, the gradient buffer is all-reduced and averaged, and every rank takes
/// the same optimizer step (`TrainStep`). Rank 0 alone writes checkpoints and
/// metrics; replicas are kept identical by `ReplicaSync`; every epoch ends
/// with the `Evaluator` on val and test.
public final class Trainer {
    public let config: TrainConfig
    let comm: Communicator
    public let evaluator: Evaluator
    public let optimizer: Optimizer
    /// The weights' moving average (`--ema`), nil when off.
    public let ema: WeightEMA?
    public private(set) var state = TrainState()
    let step: TrainStep
    var metrics: MetricsLog
    /// Rank 0's TensorBoard events (per-step train loss, per-epoch figures).
    var events: EventWriter?
    let debug: Bool
    /// Threads and backend from the command line; the network's engine adds the run's precision.
    let settings: EngineSettings
    let console: Console
    let batches = BatchPrefetcher()

    public var net: ResNet { evaluator.net }
    public var dataset: Dataset { evaluator.dataset }
    public var batchMaker: BatchMaker { evaluator.batchMaker }
    var ckptDir: String { config.run + "/ckpt" }

    /// Sets up a new run (`resume == false`: initialisation, or the transfer
    /// source) or continues one from its newest good checkpoint. Rank 0
    /// decides; everything is broadcast.
    public init(config cfg: TrainConfig, comm: Communicator, settings: EngineSettings = EngineSettings(), debug: Bool = false,
                resume: Bool = false) throws {
        let engine = try settings.engine(cfg.precision)
        if let first = cfg.problems().first { throw RuntimeError("run '\(cfg.run)': \(first)") }
        self.comm = comm
        self.debug = debug
        self.settings = settings
        var console = Console(enabled: comm.isRoot)
        console.verbose = debug
        self.console = console
        config = cfg
        evaluator = try Evaluator(config: cfg, comm: comm, engine: engine)
        var ocfg = OptimizerConfig(kind: cfg.optimizer, weightDecay: cfg.weightDecay)
        ocfg.momentum = cfg.momentum
        optimizer = Optimizer(ocfg, store: evaluator.net.store)
        step = TrainStep(net: evaluator.net, optimizer: optimizer, comm: comm,
                         loss: CrossEntropy(labelSmoothing: Float(cfg.labelSmoothing)), allreduce: cfg.allreduce, bucketMiB: cfg.bucketMiB)
        if cfg.syncBatchNorm && comm.size > 1 { evaluator.net.synchroniseBatchNorm { comm.allreduceSum($0, count: $1) } }
        metrics = MetricsLog(dir: cfg.run)
        ema = cfg.ema > 0 ? WeightEMA(decay: cfg.ema, store: evaluator.net.store) : nil
        if comm.isRoot {
            if resume {
                state = try loadNewestGood()
                metrics = MetricsLog.load(dir: cfg.run, upTo: state.epoch)
            } else {
                net.initialize(seed: cfg.seed)
                if cfg.method == .transfer {
                    console.line(try Transfer.loadSource(cfg.pretrained, into: net, adapt: cfg.adaptConv1))
                }
                ema?.reset(to: net.store)
            }
        }
        ReplicaSync.broadcastModel(net, comm)
        ReplicaSync.broadcastOptimizer(optimizer, comm)
        state = try comm.broadcast(state)
        if let ema, comm.size > 1 {
            var v = ema.values
            comm.broadcast(&v)
            ema.load(v)
        }
    }

    /// last.h5, else the newest readable epoch file (saying so).
    func loadNewestGood() throws -> TrainState {
        let candidates = [ckptDir + "/last.h5"] + Checkpoint.epochFiles(ckptDir)
        var problems: [String] = []
        for path in candidates where FileManager.default.fileExists(atPath: path) {
            do {
                let st = try Checkpoint.load(path, into: net, optimizer: optimizer, ema: ema)
                if !problems.isEmpty {
                    console.line("warning: \(problems.joined(separator: "; ")); resuming from \((path as NSString).lastPathComponent)")
                }
                let name = (path as NSString).lastPathComponent
                console.line("resuming \(config.run) after epoch \(st.epoch) (step \(st.step)) from \(name)")
                return st
            } catch {
                problems.append("\((path as NSString).lastPathComponent) is unusable (\(error))")
            }
        }
        throw RuntimeError(problems.isEmpty ? "no checkpoint in '\(ckptDir)' to resume from"
                                            : "no usable checkpoint in '\(ckptDir)': \(problems.joined(separator: "; "))")
    }

    var trainSplit: [Int] { dataset[split: .train] }

    public var sampler: ShardSampler {
        ShardSampler(count: trainSplit.count, batchSize: config.batchSize, rank: comm.rank, size: comm.size, seed: config.seed)
    }

    public var schedule: LRSchedule {
        let spe = max(sampler.stepsPerEpoch, 1)
        var s = LRSchedule(kind: config.schedule, base: Float(config.effectiveLR), totalSteps: config.epochs * spe,
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
            + "\(comm.size) rank(s) x \(net.engine.threads) thread(s), global batch \(config.batchSize), "
            + "\(sampler.stepsPerEpoch) steps/epoch, epochs \(start)...\(config.epochs)")
        let scaled = config.lrScaling == .none ? ""
            : " (\(config.lrScaling.rawValue) scaling of \(config.lr) at batch \(config.referenceBatch))"
        console.line(String(format: "peak lr %.4g%@, %@ warm-up %.3g epoch(s); all-reduce %@ in %d bucket(s)%@", config.effectiveLR, scaled,
                            config.schedule.rawValue, config.warmupEpochs, config.allreduce.rawValue, step.allreduce.buckets.count,
                            config.syncBatchNorm ? ", SyncBatchNorm" : ""))
        // TensorBoard: a new event file per process; a resumed run tells readers where it restarts.
        events = comm.isRoot ? try EventWriter(dir: config.run, resumeStep: state.step > 0 ? state.step : nil) : nil
        var done = 0
        for epoch in start...config.epochs {
            let t0 = now()
            let train = try trainEpoch(epoch)
            ReplicaSync.averageBatchNormStatistics(net, comm)
            ema?.withStatistics { comm.allreduceMean($0, count: $1) }
            try ReplicaSync.checkReplicas(net, comm, epoch: epoch)
            // With --ema, validation (and so best.h5) and the test figures are the averaged weights'.
            let (val, test) = try evaluateEpoch()
            let seconds = now() - t0
            let rss = ReplicaSync.peakRSSPerRank(comm)
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
                try metrics.append(EpochRow(epoch: epoch, trainLoss: train.loss, trainAccuracy: train.accuracy, val: val, test: test,
                                            lr: train.lastLR, seconds: seconds, imagesPerSecond: train.imagesPerSecond,
                                            peakRSSMiB: rss.max() ?? .nan))
                try saveCheckpoints(epoch: epoch, best: state.bestEpoch == epoch)
                try events?.scalars([("loss/train", train.loss), ("loss/val", val.loss), ("loss/test", test.loss),
                                     ("accuracy/train", train.accuracy), ("accuracy/val", val.accuracy), ("accuracy/test", test.accuracy),
                                     ("auc/val", val.auc), ("auc/test", test.auc), ("lr", train.lastLR),
                                     ("images_per_second", train.imagesPerSecond)], step: epoch)
                let rssText = rss.map { String(format: "%.0f", $0) }.joined(separator: "/")
                console.line(String(format: "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | "
                                    + "test loss %.4f acc %.4f auc %.4f | %.1f img/s, %@, peak RSS %@ MiB%@",
                                    epoch, config.epochs, train.loss, train.accuracy, val.loss, val.accuracy, test.loss,
                                    test.accuracy, test.auc, train.imagesPerSecond, formatDuration(seconds), rssText,
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

    func evaluateEpoch() throws -> (val: SplitMetrics, test: SplitMetrics) {
        func both() throws -> (SplitMetrics, SplitMetrics) { (try evaluator.evaluate(.val).metrics, try evaluator.evaluate(.test).metrics) }
        guard let ema else { return try both() }
        return try ema.withAveragedWeights(in: net.store, both)
    }

    /// What one epoch of training did, over all ranks.
    struct EpochTraining {
        var loss: Double, accuracy: Double, imagesPerSecond: Double
        /// The learning rate of the epoch's last step.
        var lastLR: Double
    }

    func trainEpoch(_ epoch: Int) throws -> EpochTraining {
        net.setTraining(!config.frozenBatchNormStatistics)
        if config.method == .transfer { applyTransferPhase(epoch) }
        let sampler = self.sampler, schedule = self.schedule
        let perm = sampler.permutation(epoch: epoch)
        let split = trainSplit
        let steps = sampler.stepsPerEpoch
        guard steps > 0 else {
            throw RuntimeError("the train split has \(split.count) images, fewer than one global batch of \(config.batchSize)")
        }
        var lossSum = 0.0, correct = 0.0, seen = 0.0, lr = 0.0
        let t0 = now()
        let (maker, dataset, seed, augment) = (batchMaker, self.dataset, config.seed, config.augment ? epoch : nil)
        func prefetch(_ i: Int) {
            let indices = sampler.localIndices(epoch: epoch, step: i, permutation: perm).map { split[$0] }
            batches.start { try maker.batch(dataset, indices, into: $0, seed: seed, augmentEpoch: augment, parallel: false) }
        }
        prefetch(0)
        for i in 0..<steps {
            let (x, labels) = try batches.take()
            if i + 1 < steps { prefetch(i + 1) }
            lr = Double(schedule.lr(at: state.step))
            let r = try step(x, labels: labels, lr: lr) { r in
                guard r.meanLoss.isFinite else {
                    throw RuntimeError("loss is \(r.meanLoss) at epoch \(epoch), step \(i + 1); "
                                       + "the last good checkpoint is kept in \(ckptDir)")
                }
                if debug { try checkFinite(epoch: epoch, step: i + 1) }
            }
            state.step += 1
            ema?.update(from: net.store)
            try events?.scalars([("loss/train_step", r.meanLoss)], step: state.step)
            lossSum += r.lossSum; correct += r.correct; seen += r.count
            let elapsed = now() - t0, ips = seen / elapsed
            let eta = elapsed / Double(i + 1) * Double(steps - i - 1)
            var line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  acc %.3f  lr %.2e  %.1f img/s  ETA %@",
                              epoch, config.epochs, i + 1, steps, lossSum / seen, correct / seen, lr, ips, formatDuration(eta))
            if debug { line += String(format: "  step loss %.4f  |grad| %.4e", r.meanLoss, net.store.gradientNorm()) }
            console.progress(line, step: i + 1, of: steps)
        }
        return EpochTraining(loss: lossSum / seen, accuracy: correct / seen, imagesPerSecond: seen / (now() - t0), lastLR: lr)
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

    /// --debug: every parameter and gradient finite after each step.
    func checkFinite(epoch: Int, step: Int) throws {
        let s = net.store
        for e in s.namedParameters() {
            let g = s.gradPointer(e), p = s.pointer(e)
            for i in 0..<e.count where !g[i].isFinite || !p[i].isFinite {
                let what = g[i].isFinite ? "value" : "gradient"
                throw RuntimeError("non-finite \(what) in '\(e.name)'[\(i)] at epoch \(epoch), step \(step)")
            }
        }
    }

    /// epoch-NNNN.h5, then last.h5 (and best.h5) as copies written the same
    /// safe way; only the newest `keepCheckpoints` epoch files stay.
    func saveCheckpoints(epoch: Int, best: Bool) throws {
        let file = String(format: "%@/epoch-%04d.h5", ckptDir, epoch)
        try Checkpoint.save(file, net: net, optimizer: optimizer, state: state, config: config, ema: ema)
        for target in ["last.h5"] + (best ? ["best.h5"] : []) {
            try durableCopy(file, "\(ckptDir)/\(target)")
        }
        for old in Checkpoint.epochFiles(ckptDir).dropFirst(max(config.keepCheckpoints, 1)) {
            try? FileManager.default.removeItem(atPath: old)
        }
    }
}

extension ParameterStore {
    /// L2 norm of the whole gradient buffer (--debug lines).
    func gradientNorm() -> Double {
        var g2 = 0.0
        for i in 0..<parameterCount { g2 += Double(grads[i]) * Double(grads[i]) }
        return g2.squareRoot()
    }
}
