import Foundation
import Net

/// Training state beyond the tensors.
public struct TrainState: Sendable, Equatable {
    public var epoch = 0          // last completed epoch (1-based); 0 = none
    public var step = 0           // global optimizer steps taken
    public var bestValLoss = Double.infinity
    public var bestValAccuracy = 0.0
    public var bestEpoch = 0
    public init() {}
}

/// HDF5 checkpoints (DESIGN.md "On disk"): `model/<state_dict key>` (same
/// shapes; float32, counters int64), `optimizer/<key>/<state name>` and
/// `optimizer/steps`, `state/...`, attributes. Loads into
/// torchvision.models.resnet18(num_classes=2) (conv1 widened) by key with h5py.
/// Written to *.tmp, fsynced, renamed: never half a file.
public enum Checkpoint {
    public static let formatVersion = 1.0

    public static func save(_ path: String, net: ResNet, optimizer: Optimizer, state: TrainState, config: TrainConfig) throws {
        let tmp = path + ".tmp"
        do {
            let f = try HDF5File(tmp, .create)
            let s = net.store
            for e in s.entries {
                if e.kind == .counter {
                    try f.write("model/" + e.name, shape: [], int64s: [s.counters[e.offset]], chunked: false)
                } else {
                    try f.write("model/" + e.name, shape: e.shape, floats: s.read(e), chunked: e.count > 0)
                }
            }
            for e in s.entries where e.kind == .parameter {
                for (k, name) in optimizer.stateNames.enumerated() {
                    let base = k == 0 ? optimizer.state1 : optimizer.state2
                    let v = Array(UnsafeBufferPointer(start: base + e.offset, count: e.count))
                    try f.write("optimizer/\(e.name)/\(name)", shape: e.shape, floats: v)
                }
            }
            try f.write("optimizer/steps", shape: [optimizer.steps.count], int64s: optimizer.steps)
            try f.write("state/epoch", shape: [1], int64s: [Int64(state.epoch)])
            try f.write("state/step", shape: [1], int64s: [Int64(state.step)])
            try f.write("state/best_epoch", shape: [1], int64s: [Int64(state.bestEpoch)])
            try f.write("state/best", doubles: [state.bestValLoss, state.bestValAccuracy])
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
        }
        try durableRename(tmp, path)
    }

    /// Loads model (and optimizer, when given) state; every dataset named in errors.
    @discardableResult
    public static func load(_ path: String, into net: ResNet, optimizer: Optimizer? = nil) throws -> TrainState {
        let f = try HDF5File(path)
        guard let version = try f.doubleAttribute("format_version") else {
            throw RuntimeError("'\(path)' is not a disttrain checkpoint (no format_version)")
        }
        guard version <= formatVersion else { throw RuntimeError("'\(path)' has format version \(version); this disttrain reads \(formatVersion)") }
        let s = net.store
        for e in s.entries {
            let key = "model/" + e.name
            guard f.exists(key) else { throw RuntimeError("checkpoint '\(path)' has no dataset '\(e.name)'") }
            if e.kind == .counter {
                s.counters[e.offset] = try f.readInt64s(key).values.first ?? 0
            } else {
                let (shape, v) = try f.readFloats(key)
                guard shape == e.shape else { throw RuntimeError("checkpoint '\(path)': '\(e.name)' has shape \(shape), the model needs \(e.shape)") }
                s.write(e, v)
            }
        }
        if let opt = optimizer {
            for e in s.entries where e.kind == .parameter {
                for (k, name) in opt.stateNames.enumerated() {
                    let key = "optimizer/\(e.name)/\(name)"
                    guard f.exists(key) else { throw RuntimeError("checkpoint '\(path)' has no optimizer state '\(e.name)/\(name)'") }
                    let v = try f.readFloats(key).values
                    let base = k == 0 ? opt.state1 : opt.state2
                    v.withUnsafeBufferPointer { (base + e.offset).update(from: $0.baseAddress!, count: e.count) }
                }
            }
            let steps = try f.readInt64s("optimizer/steps").values
            guard steps.count == opt.steps.count else { throw RuntimeError("checkpoint '\(path)': optimizer/steps has \(steps.count) entries, expected \(opt.steps.count)") }
            opt.steps = steps
        }
        var st = TrainState()
        st.epoch = Int(try f.readInt64s("state/epoch").values[0])
        st.step = Int(try f.readInt64s("state/step").values[0])
        st.bestEpoch = Int(try f.readInt64s("state/best_epoch").values[0])
        let best = try f.readDoubles("state/best").values
        st.bestValLoss = best[0]; st.bestValAccuracy = best[1]
        return st
    }

    /// `newest` first: the epoch files of a run folder.
    public static func epochFiles(_ dir: String) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasPrefix("epoch-") && $0.hasSuffix(".h5") }.sorted(by: >).map { dir + "/" + $0 }
    }
}
