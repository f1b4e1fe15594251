import Foundation
import Net

/// Tensors by torchvision state_dict name, wherever they come from: a
/// checkpoint's `model/` group, a transfer source, an imported .pth.
public protocol TensorSource {
    /// Named in every error.
    var description: String { get }
    /// nil when the source has no tensor of that name. Read before the
    /// values, so a wrong declared size is refused before any allocation.
    func shape(_ name: String) throws -> [Int]?
    func values(_ name: String) throws -> [Float]
    func counter(_ name: String) throws -> Int64?
}

/// `group/<key>` datasets of an HDF5 file (checkpoints and transfer sources).
public struct HDF5TensorSource: TensorSource {
    public let file: HDF5File
    public let group: String
    public let description: String

    public init(_ file: HDF5File, group: String, what: String) {
        self.file = file; self.group = group; description = "\(what) '\(file.path)'"
    }

    public func shape(_ name: String) throws -> [Int]? {
        file.exists(group + "/" + name) ? try file.shape(group + "/" + name) : nil
    }

    public func values(_ name: String) throws -> [Float] { try file.readFloats(group + "/" + name).values }

    public func counter(_ name: String) throws -> Int64? {
        file.exists(group + "/" + name) ? try file.readInt64s(group + "/" + name).values.first ?? 0 : nil
    }
}

/// PyTorch's `load_state_dict` for our ResNet: one routine with one set of
/// checks (every tensor present, its shape the model's) and one set of error
/// words, for checkpoints, transfer sources and imported weights.
public enum StateDict {
    public struct Options: Sendable {
        /// Keys left as the model has them (a transfer source's fc head).
        public var skipPrefixes: [String] = []
        /// num_batches_tracked may be missing (timm omits it).
        public var countersOptional = false
        /// conv1 of an RGB source may meet a 1-channel model by summing over its input channels.
        public var sumConv1InputChannels = false
        /// The float tensors only (counters left as they are), and BatchNorm buffers only where the
        /// source has them: the training weights of an --ema checkpoint (older ones hold parameters alone).
        public var trainingWeights = false
        public init() {}
    }

    public struct Report: Sendable {
        public var loaded: [String] = []
        public var adapted: [String] = []
        public var skipped: [String] = []
    }

    @discardableResult
    public static func load(_ source: TensorSource, into net: ResNet, _ options: Options = Options()) throws -> Report {
        let s = net.store
        var report = Report()
        for e in s.entries {
            if options.skipPrefixes.contains(where: { e.name.hasPrefix($0) }) { report.skipped.append(e.name); continue }
            if options.trainingWeights && e.kind == .counter { continue }
            if e.kind == .counter {
                guard let v = try source.counter(e.name) else {
                    if options.countersOptional { continue }
                    throw missing(e.name, source, net)
                }
                s.counters[e.offset] = v
                report.loaded.append(e.name)
                continue
            }
            guard let shape = try source.shape(e.name) else {
                if options.trainingWeights && e.kind == .buffer { continue }
                throw missing(e.name, source, net)
            }
            let sumConv1 = options.sumConv1InputChannels && e.name == "conv1.weight" && e.shape[1] == 1 && shape.count == 4
                && shape[0] == e.shape[0] && shape[2...] == e.shape[2...] && (1...64).contains(shape[1])
            guard shape == e.shape || sumConv1 else {
                throw RuntimeError("\(source.description): '\(e.name)' has shape \(shape), the model needs \(e.shape) "
                                   + "(a \(net.config.arch.rawValue) with \(net.config.inChannels) input channels, "
                                   + "\(net.config.numClasses) classes, width \(net.config.width))")
            }
            let v = try source.values(e.name)
            guard v.count == shape.reduce(1, *) else {
                throw RuntimeError("\(source.description): '\(e.name)' has \(v.count) values for shape \(shape)")
            }
            if let bad = v.firstIndex(where: { !$0.isFinite }) {
                throw RuntimeError("\(source.description): '\(e.name)' holds \(v[bad]) at [\(bad)]: the weights are not finite "
                                   + "(a diverged run or a damaged file)")
            }
            if shape == e.shape {
                s.write(e, v)
            } else {
                // (OC, IC, KH, KW) -> (OC, 1, KH, KW): a gray g fed as (g, ..., g) gives the same activation.
                let OC = shape[0], IC = shape[1], K = shape[2] * shape[3]
                var w = [Float](repeating: 0, count: OC * K)
                for o in 0..<OC { for i in 0..<IC { for k in 0..<K { w[o * K + k] += v[(o * IC + i) * K + k] } } }
                s.write(e, w)
                report.adapted.append("conv1.weight summed over \(IC) input channels")
            }
            report.loaded.append(e.name)
        }
        return report
    }

    /// The optimizer's per-parameter state (`optimizer/<key>/<state name>`) and
    /// its step counts, with the same checks as the model's tensors.
    public static func loadOptimizer(_ file: HDF5File, into opt: Optimizer, of net: ResNet) throws {
        let what = "checkpoint '\(file.path)'"
        for e in net.store.entries where e.kind == .parameter {
            for state in opt.state {
                let name = state.name, key = "optimizer/\(e.name)/\(name)"
                guard file.exists(key) else { throw RuntimeError("\(what) has no optimizer state '\(e.name)/\(name)'") }
                let shape = try file.shape(key)
                guard shape == e.shape else {
                    throw RuntimeError("\(what): optimizer state '\(e.name)/\(name)' has shape \(shape), the model needs \(e.shape)")
                }
                let v = try file.readFloats(key).values
                guard v.count == e.count, v.allSatisfy(\.isFinite) else {
                    throw RuntimeError("\(what): optimizer state '\(e.name)/\(name)' is not \(e.count) finite values")
                }
                state.write(e, v)
            }
        }
        let steps = try file.readInt64s("optimizer/steps").values
        guard steps.count == opt.steps.count, steps.allSatisfy({ $0 >= 0 }) else {
            throw RuntimeError("\(what): optimizer/steps must be \(opt.steps.count) counts >= 0, is \(steps.count) entries")
        }
        opt.steps = steps
    }

    static func missing(_ name: String, _ source: TensorSource, _ net: ResNet) -> RuntimeError {
        RuntimeError("\(source.description) has no '\(name)' (a \(net.config.arch.rawValue) needs it)")
    }
}
