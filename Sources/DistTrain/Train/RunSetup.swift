import Foundation
import Net

/// A new run: rank 0 checks the folder, resolves the data and writes
/// config.json; every rank then receives that configuration and trains, and
/// (`evaluate`) ends with the evaluation stage once the last epoch is done.
public func startTraining(_ config: TrainConfig, comm: Communicator, debug: Bool, evaluate: Bool = false,
                          settings: EngineSettings = EngineSettings()) throws {
    var cfg = config
    guard cfg.batchSize % comm.size == 0 else {
        throw RuntimeError("--batch-size \(cfg.batchSize) does not split evenly over \(comm.size) ranks")
    }
    let lock = comm.isRoot ? try RunLock.acquire(cfg.run) : nil
    defer { withExtendedLifetime(lock) {} }
    if comm.isRoot {
        if FileManager.default.fileExists(atPath: cfg.run + "/ckpt/last.h5") {
            throw RuntimeError("run folder '\(cfg.run)' already has checkpoints; "
                               + "continue it with `disttrain resume \(cfg.run)` or choose another --run")
        }
        cfg = try RunSetup.resolveData(cfg)
        try cfg.save(to: cfg.run + "/config.json")
    }
    comm.barrierWithoutTimeLimit()  // rank 0 may be preparing a whole image folder (a first run)
    cfg = try comm.broadcast(cfg)
    let trainer = try Trainer(config: cfg, comm: comm, settings: settings, debug: debug)
    try trainer.run()
    if evaluate { try finalEvaluation(trainer, comm: comm) }
}

/// The eval stage on best.h5 after the last epoch (not after --stop-after).
func finalEvaluation(_ trainer: Trainer, comm: Communicator) throws {
    guard trainer.state.epoch >= trainer.config.epochs else { return }
    if comm.isRoot { print("evaluating \(trainer.config.run)/ckpt/best.h5 (disttrain eval)") }
    let s = try EvalStage.run(config: trainer.config, comm: comm, checkpoint: trainer.config.run + "/ckpt/best.h5",
                              settings: trainer.settings)
    if comm.isRoot {
        print(String(format: "test: accuracy %.4f  loss %.4f  sensitivity %.4f  specificity %.4f  AUC %.4f",
                     s.test.accuracy, s.test.loss, s.test.sensitivity, s.test.specificity, s.test.auc))
    }
}

/// What a new run needs before its trainer: the data set resolved into the config.
enum RunSetup {
    /// Prepares (or reuses) the data set and copies its facts into the config:
    /// channels, classes, normalisation (a transfer source's when transferring).
    static func resolveData(_ cfg: TrainConfig) throws -> TrainConfig {
        var cfg = cfg
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: cfg.data, isDirectory: &isDir) else { throw RuntimeError("--data '\(cfg.data)' does not exist") }
        cfg.dataset = isDir.boolValue ? try preparedCache(of: cfg.data, next: cfg.run) : cfg.data
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
            if cfg.adaptConv1 == .replicate && ds.channels == 1 {
                cfg.inChannels = src.channels
                cfg.mean = src.mean; cfg.std = src.std
            } else {
                cfg.mean = [src.mean.reduce(0, +) / Double(src.mean.count)]
                cfg.std = [src.std.reduce(0, +) / Double(src.std.count)]
            }
        }
        cfg.datasetFingerprint = ds.fingerprint
        cfg.window = try ds.file.stringAttribute("window")
        return cfg
    }

    /// An image folder prepared once into `.cache/` beside the run folder, keyed
    /// by a fingerprint of its listing (reused while the folder is unchanged).
    static func preparedCache(of folder: String, next run: String) throws -> String {
        let source = try DatasetSource.detect(folder)
        let parent = (run as NSString).deletingLastPathComponent
        let cacheDir = (parent.isEmpty ? "." : parent) + "/.cache"
        try FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
        let (listing, _) = try source.listing()
        let fp = source.fingerprint(listing, size: nil, channels: nil)
        let name = ((folder as NSString).standardizingPath as NSString).lastPathComponent
        let cached = "\(cacheDir)/\(name)-\(fp).h5"
        if !FileManager.default.fileExists(atPath: cached) {
            print("preparing \(folder) into \(cached) (once; reused while the folder is unchanged)")
            let t0 = now()
            try source.prepare(out: cached) { done, total in
                if done % 500 == 0 || done == total { print("  \(done)/\(total) images"); fflush(stdout) }
            }
            print(String(format: "prepared in %.1f s", now() - t0))
        }
        return cached
    }
}
