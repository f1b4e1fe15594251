import Foundation
import Net

/// Turns imported tensors into a transfer source: torchvision keys checked
/// against the architecture, every shape checked, written as a disttrain
/// checkpoint (model/<key>) with ImageNet normalisation attributes.
public enum WeightImporter {
    public static func normalise(_ raw: [String: ImportedTensor]) -> [String: ImportedTensor] {
        var out: [String: ImportedTensor] = [:]
        for (k, v) in raw {
            var key = k
            for p in ["module.", "model.", "backbone."] where key.hasPrefix(p) { key = String(key.dropFirst(p.count)) }
            out[key] = v
        }
        return out
    }

    /// resnet50 when bottlenecks are present; resnet34 when layer3 has 6 blocks.
    public static func guessArch(_ t: [String: ImportedTensor]) -> Arch {
        if t["layer1.0.conv3.weight"] != nil { return .resnet50 }
        if t["layer3.5.conv1.weight"] != nil { return .resnet34 }
        return .resnet18
    }

    /// The network the tensors describe, loaded (`StateDict`), and the keys
    /// it took and those it did not know.
    public static func build(_ tensors: [String: ImportedTensor], arch: Arch?,
                             path: String) throws -> (net: ResNet, loaded: [String], skipped: [String]) {
        let t = normalise(tensors)
        guard let conv1 = t["conv1.weight"], conv1.shape.count == 4, let fc = t["fc.weight"], fc.shape.count == 2 else {
            throw RuntimeError("'\(path)' has no conv1.weight / fc.weight: not a torchvision or timm ResNet state dict")
        }
        let guessed = guessArch(t)
        if let a = arch, a != guessed {
            throw RuntimeError("'\(path)' holds a \(guessed.rawValue) (by its keys), not the \(a.rawValue) asked for")
        }
        let config = ResNetConfig(arch: guessed, inChannels: conv1.shape[1], numClasses: fc.shape[0], width: conv1.shape[0])
        // The architecture is checked against what the file holds before the network is allocated:
        // a small file whose conv1 claims width 1024 must not make an 11 GB model.
        guard (1...1024).contains(config.width), (1...64).contains(config.inChannels), (1...100_000).contains(config.numClasses) else {
            throw RuntimeError("'\(path)': conv1.weight \(conv1.shape) / fc.weight \(fc.shape) describe no ResNet disttrain builds "
                               + "(width 1...1024, 1...64 input channels, 1...100000 classes)")
        }
        // Grossly more than the file holds: refused here; a tensor or two missing: named by StateDict below.
        let needed = modelElements(config), held = t.values.reduce(0) { $0 + $1.values.count }
        guard needed <= 2 * held + 1_000_000 else {
            throw RuntimeError("'\(path)': a \(guessed.rawValue) of width \(config.width) has \(needed) values, the file holds \(held): "
                               + "tensors are missing or misdeclared")
        }
        let net = ResNet(config)
        var options = StateDict.Options()
        options.countersOptional = true  // num_batches_tracked: timm omits it
        let report = try StateDict.load(ImportedTensorSource(tensors: t, path: path), into: net, options)
        let known = Set(net.store.entries.map(\.name))
        return (net, report.loaded, t.keys.filter { !known.contains($0) }.sorted())
    }
}

/// Values (parameters and buffers) of a ResNet, without building it: the
/// count is a quadratic in the width (convolutions w^2, BN and fc w), fitted
/// exactly on widths 1, 2 and 3.
func modelElements(_ config: ResNetConfig) -> Int {
    func count(_ w: Int) -> Int {
        var c = config
        c.width = w
        let s = ResNet(c).store
        return s.parameterCount + s.bufferCount
    }
    let p1 = count(1), p2 = count(2), p3 = count(3)
    let a = (p3 - 2 * p2 + p1) / 2, b = p2 - p1 - 3 * a, c = p1 - a - b
    let w = config.width
    return a * w * w + b * w + c
}

/// Imported tensors as a `TensorSource` (counters arrive as numbers).
struct ImportedTensorSource: TensorSource {
    let tensors: [String: ImportedTensor]
    let path: String
    var description: String { "'\(path)'" }

    func shape(_ name: String) throws -> [Int]? { tensors[name]?.shape }
    func values(_ name: String) throws -> [Float] { tensors[name]?.values ?? [] }
    func counter(_ name: String) throws -> Int64? { tensors[name].map { Int64($0.values.first ?? 0) } }
}
