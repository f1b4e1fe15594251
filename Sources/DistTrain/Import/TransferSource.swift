import Foundation
import Net

/// Initialising a network from a source checkpoint trained on another task
/// (`pretrain` or `import-weights` made it: HDF5, torchvision keys).
public enum Transfer {
    /// Copies every backbone tensor of `path` into `net` by name (`StateDict`);
    /// the fc head keeps its fresh initialisation. conv1 of an RGB source
    /// meets a 1-channel network by summing over its input channels (`.sum`);
    /// with `.replicate` the network has the source's 3 input channels and
    /// conv1 is copied as it is (the loader replicates the gray image). BN
    /// running statistics come along: they describe the backbone's features.
    /// Returns a one-line report.
    public static func loadSource(_ path: String, into net: ResNet, adapt: Conv1Adaptation) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw RuntimeError("transfer source '\(path)' not found (build one with `disttrain pretrain` or `disttrain import-weights`)")
        }
        var options = StateDict.Options()
        options.skipPrefixes = ["fc."]
        options.sumConv1InputChannels = true
        let r = try StateDict.load(HDF5TensorSource(try HDF5File(path), group: "model", what: "transfer source"), into: net, options)
        return "transfer (conv1: \(adapt.rawValue)): \(r.loaded.count) tensors from \(path)"
            + (r.adapted.isEmpty ? "" : "; " + r.adapted.joined(separator: "; ")) + "; new head: \(r.skipped.joined(separator: ", "))"
    }

    /// What a run needs to know of its source before building its network.
    public struct SourceInfo: Sendable {
        public var channels: Int
        /// Normalisation of the source's inputs, per channel.
        public var mean: [Double], std: [Double]
        public var arch: String?
    }

    /// The source's normalisation and input channels, from its attributes.
    public static func sourceInfo(_ path: String) throws -> SourceInfo {
        let f = try HDF5File(path)
        let ch = Int(try f.doubleAttribute("in_channels") ?? 3)
        func list(_ k: String) throws -> [Double] {
            (try f.stringAttribute(k) ?? "").split(separator: ",").compactMap { Double($0) }
        }
        var mean = try list("mean"), std = try list("std")
        if mean.isEmpty { mean = [0.485, 0.456, 0.406] }  // torchvision's ImageNet statistics
        if std.isEmpty { std = [0.229, 0.224, 0.225] }
        return SourceInfo(channels: ch, mean: mean, std: std, arch: try f.stringAttribute("arch"))
    }
}
