import Foundation
import Net

/// Initialising a network from a source checkpoint trained on another task.
public enum Transfer {
    /// Copies every backbone tensor of `path` (model/<key>, torchvision keys)
    /// into `net` by name; the fc head keeps its fresh initialisation. conv1 of
    /// an RGB source meets a 1-channel network by summing over its input
    /// channels ("sum"): a gray image g fed as (g, g, g) gives the same first
    /// activation. BN running statistics come along (they describe the
    /// backbone's features). With `adapt` "replicate" the network has the
    /// source's 3 input channels and conv1 is copied as it is (the gray image
    /// is replicated by the loader). Returns a one-line report.
    public static func loadSource(_ path: String, into net: ResNet, adapt: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw RuntimeError("transfer source '\(path)' not found (build one with `disttrain pretrain` or `disttrain import-weights`)")
        }
        let f = try HDF5File(path)
        let s = net.store
        var loaded = 0, adapted: [String] = [], skipped: [String] = []
        for e in s.entries {
            if e.name.hasPrefix("fc.") { skipped.append(e.name); continue }
            let key = "model/" + e.name
            guard f.exists(key) else { throw RuntimeError("transfer source '\(path)' has no '\(e.name)' (is it a \(net.config.arch.rawValue)?)") }
            if e.kind == .counter { s.counters[e.offset] = try f.readInt64s(key).values.first ?? 0; loaded += 1; continue }
            let (shape, v) = try f.readFloats(key)
            if shape == e.shape {
                s.write(e, v)
                loaded += 1
            } else if e.name == "conv1.weight", shape.count == 4, shape[0] == e.shape[0], shape[2...] == e.shape[2...], e.shape[1] == 1 {
                // (OC, IC, KH, KW) -> (OC, 1, KH, KW) by summing over IC.
                let OC = shape[0], IC = shape[1], K = shape[2] * shape[3]
                var w = [Float](repeating: 0, count: OC * K)
                for o in 0..<OC { for i in 0..<IC { for k in 0..<K { w[o * K + k] += v[(o * IC + i) * K + k] } } }
                s.write(e, w)
                adapted.append("conv1.weight summed over \(IC) input channels")
                loaded += 1
            } else {
                throw RuntimeError("transfer source '\(path)': '\(e.name)' has shape \(shape), the network needs \(e.shape) (architecture mismatch?)")
            }
        }
        return "transfer (conv1: \(adapt)): \(loaded) tensors from \(path)" + (adapted.isEmpty ? "" : "; " + adapted.joined(separator: "; "))
            + "; new head: \(skipped.joined(separator: ", "))"
    }

    /// The source's normalisation and input channels, from its attributes.
    public static func sourceInfo(_ path: String) throws -> (channels: Int, mean: [Double], std: [Double], arch: String?) {
        let f = try HDF5File(path)
        let ch = Int(try f.doubleAttribute("in_channels") ?? 3)
        func list(_ k: String) throws -> [Double] {
            (try f.stringAttribute(k) ?? "").split(separator: ",").compactMap { Double($0) }
        }
        var mean = try list("mean"), std = try list("std")
        if mean.isEmpty { mean = [0.485, 0.456, 0.406] }  // torchvision's ImageNet statistics
        if std.isEmpty { std = [0.229, 0.224, 0.225] }
        return (ch, mean, std, try f.stringAttribute("arch"))
    }
}
