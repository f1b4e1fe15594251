import Foundation
import Net

/// HDF5 checkpoints (DESIGN.md "On disk"): `model/<state_dict key>` (same
/// shapes; float32, counters int64), `optimizer/<key>/<state name>` and
/// `optimizer/steps`, `state/<TrainState field>` and `state/seed`, attributes.
/// With `--ema`, `model/` holds the averaged weights and BatchNorm statistics
/// (what inference and h5py users load) and `training/<key>` the training ones
/// (what resume needs; checkpoints before 2026-11-27 hold parameters alone there).
/// Loads into torchvision.models.resnet18(num_classes=2) (conv1 widened) by
/// key with h5py. Written to *.tmp, fsynced, renamed: never half a file.
public enum Checkpoint {
    /// The layout a checkpoint says it has; a disttrain refuses files newer than its own.
    /// 2: `state/<field>`, one dataset per TrainState field (8690bcf), and, with --ema, the
    /// average in `model/` and the training weights and BatchNorm statistics in `training/`
    /// (1467e27, 5caf8f5). An older disttrain would have resumed such a checkpoint from the
    /// average, or not found `state/best`; they read 1 and so refuse 2.
    /// 1: the first round (`state/best` = [loss, accuracy], no `training/`), and the files
    /// written with the layout of 2 before this bump, which still said 1. Loading goes by
    /// what a file holds (`readFields`, `training/` present or not), so every 1 reads.
    public static let formatVersion = 2.0

    public static func save(_ path: String, net: ResNet, optimizer: Optimizer, state: TrainState, config: TrainConfig,
                            ema: WeightEMA? = nil) throws {
        try durableHDF5(path) { f in
            let s = net.store
            for e in s.entries {
                if e.kind == .counter {
                    try f.write("model/" + e.name, shape: [], int64s: [s.counters[e.offset]], chunked: false)
                } else if let ema {
                    try f.write("model/" + e.name, shape: e.shape, floats: ema.values(of: e), chunked: e.count > 0)
                    try f.write("training/" + e.name, shape: e.shape, floats: s.read(e), chunked: e.count > 0)
                } else {
                    try f.write("model/" + e.name, shape: e.shape, floats: s.read(e), chunked: e.count > 0)
                }
            }
            for e in s.entries where e.kind == .parameter {
                for state in optimizer.state {
                    try f.write("optimizer/\(e.name)/\(state.name)", shape: e.shape, floats: state.read(e))
                }
            }
            try f.write("optimizer/steps", shape: [optimizer.steps.count], int64s: optimizer.steps)
            try f.writeFields("state", state)
            try f.write("state/seed", shape: [1], int64s: [Int64(bitPattern: config.seed)])
            try f.setAttribute("format_version", formatVersion)
            try f.setAttribute("arch", config.arch.rawValue)
            try f.setAttribute("method", config.method.rawValue)
            try f.setAttribute("optimizer", config.optimizer.rawValue)
            try f.setAttribute("in_channels", Double(config.inChannels))
            try f.setAttribute("num_classes", Double(config.numClasses))
            try f.setAttribute("image_size", Double(config.imageSize))
            try f.setAttribute("width", Double(config.width))
            try f.setAttribute("mean", config.mean.map { String($0) }.joined(separator: ","))
            try f.setAttribute("std", config.std.map { String($0) }.joined(separator: ","))
            try f.setAttribute("class_names", config.classNames.joined(separator: ","))
            try f.setAttribute("dataset_fingerprint", config.datasetFingerprint)
            if let w = config.window { try f.setAttribute("window", w) }
        }
    }

    /// Loads the model (and the optimizer, when given) by name; returns the
    /// training state. For inference, `model/` (the averaged weights of an
    /// --ema run); to resume (`optimizer` given), the training weights, and the
    /// average into `ema` (its BatchNorm statistics are the model's where an
    /// older checkpoint kept no training/ statistics: then they were the same).
    @discardableResult
    public static func load(_ path: String, into net: ResNet, optimizer: Optimizer? = nil,
                            ema: WeightEMA? = nil) throws -> TrainState {
        let f = try open(path)
        try StateDict.load(HDF5TensorSource(f, group: "model", what: "checkpoint"), into: net)
        if let opt = optimizer {
            if f.exists("training") {
                ema?.reset(to: net.store)
                var training = StateDict.Options()
                training.trainingWeights = true
                try StateDict.load(HDF5TensorSource(f, group: "training", what: "checkpoint (training weights)"), into: net, training)
            } else if ema != nil {
                throw RuntimeError("checkpoint '\(path)' has no training/ weights: it was not written with --ema, "
                                   + "so the average cannot resume")
            }
            try StateDict.loadOptimizer(f, into: opt, of: net)
        }
        let state = try f.readFields("state", as: TrainState.self)
        if let first = state.problems().first { throw RuntimeError("checkpoint '\(path)': state: \(first)") }
        return state
    }

    /// Opens a checkpoint, refusing files that are not one or are too new.
    public static func open(_ path: String) throws -> HDF5File {
        let f = try HDF5File(path)
        guard let version = try f.doubleAttribute("format_version") else {
            throw RuntimeError("'\(path)' is not a disttrain checkpoint (no format_version)")
        }
        guard version <= formatVersion else {
            throw RuntimeError("'\(path)' has format version \(version); this disttrain reads \(formatVersion)")
        }
        return f
    }

    /// `newest` first: the epoch files of a run folder.
    public static func epochFiles(_ dir: String) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasPrefix("epoch-") && $0.hasSuffix(".h5") }.sorted(by: >).map { dir + "/" + $0 }
    }
}

/// A run's network for inference, one loader for predict, eval and export:
/// the run's precision from config.json (so predict computes what eval
/// computed: bf16 runs in bf16, their CAMs included), and the checkpoint's
/// attributes and declared shapes checked against config.json before the
/// network is allocated (a config.json saying width 200 must not build a
/// 460 MB model, or one saying 1024 an 11 GB one, to learn that the file holds width 4).
public enum RunModel {
    /// The engine of the run's network: `settings` (threads, backend) in the precision config.json
    /// names; an error naming config.json when this CPU cannot run it.
    public static func engine(_ config: TrainConfig, configPath: String, settings: EngineSettings) throws -> Engine {
        do { return try settings.engine(config.precision) } catch {
            throw RuntimeError("'\(configPath)': computing in \(config.precision.rawValue) (the run's precision, or --precision): \(error)")
        }
    }

    /// The run's engine, the checkpoint checked (`check`), then the network built on that engine and the
    /// checkpoint's model/ loaded into it.
    /// `precision: false` for export, which runs no GEMM (the ONNX weights are fp32
    /// either way): an fp32 engine, so a bf16 run exports on a CPU without AVX512-BF16.
    public static func load(_ checkpoint: String, config: TrainConfig, configPath: String, settings: EngineSettings = EngineSettings(),
                            precision: Bool = true) throws -> ResNet {
        let e = precision ? try engine(config, configPath: configPath, settings: settings) : try settings.engine(.fp32)
        try check(checkpoint, config: config, configPath: configPath)
        let net = ResNet(config.netConfig, engine: e)
        try Checkpoint.load(checkpoint, into: net)
        return net
    }

    /// Refuses a checkpoint that does not hold the network config.json describes,
    /// from its attributes (arch, width, channels, classes, where written) and
    /// every model/ tensor's declared shape; nothing of the model is allocated.
    public static func check(_ path: String, config: TrainConfig, configPath: String) throws {
        let f = try Checkpoint.open(path)
        let n = config.netConfig
        if let arch = try f.stringAttribute("arch"), arch != n.arch.rawValue {
            throw RuntimeError("'\(configPath)' says arch \(n.arch.rawValue), but checkpoint '\(path)' was written for \(arch): "
                               + "they are not from the same run")
        }
        for (key, word, want) in [("width", "width", n.width), ("in_channels", "inChannels", n.inChannels),
                                  ("num_classes", "numClasses", n.numClasses)] {
            if let v = try f.doubleAttribute(key), v != Double(want) {
                throw RuntimeError("'\(configPath)' says \(word) \(want), but checkpoint '\(path)' was written with \(key) "
                                   + "\(v.isFinite && abs(v) < 1e15 ? String(Int(v)) : String(v)): they are not from the same run")
            }
        }
        for (name, shape) in expectedShapes(n) {
            let key = "model/" + name
            guard f.exists(key) else {
                throw RuntimeError("checkpoint '\(path)' has no '\(key)' (a \(n.arch.rawValue) of width \(n.width), as "
                                   + "'\(configPath)' says, needs it)")
            }
            let held = try f.shape(key)
            guard held == shape else {
                throw RuntimeError("checkpoint '\(path)' holds '\(name)' of shape \(held); '\(configPath)' describes a \(n.arch.rawValue) "
                                   + "of width \(n.width), \(n.inChannels) input channel(s) and \(n.numClasses) classes, which needs \(shape)")
            }
        }
    }

    /// Every tensor of the network `config` describes with its shape, without
    /// building it: each extent is either the same at widths 1 and 2 (kernel
    /// sizes, input channels, classes, counters) or proportional to the width
    /// (every channel count is width x 2^stage x expansion).
    static func expectedShapes(_ config: ResNetConfig) -> [(String, [Int])] {
        var c1 = config, c2 = config
        c1.width = 1; c2.width = 2
        let a = ResNet(c1).store.entries, b = ResNet(c2).store.entries
        return zip(a, b).map { e1, e2 in
            (e1.name, zip(e1.shape, e2.shape).map { d1, d2 in d1 == d2 ? d1 : d1 * config.width })
        }
    }
}
