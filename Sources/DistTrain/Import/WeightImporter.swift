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
        let net = ResNet(ResNetConfig(arch: guessed, inChannels: conv1.shape[1], numClasses: fc.shape[0], width: conv1.shape[0]))
        var options = StateDict.Options()
        options.countersOptional = true  // num_batches_tracked: timm omits it
        let report = try StateDict.load(ImportedTensorSource(tensors: t, path: path), into: net, options)
        let known = Set(net.store.entries.map(\.name))
        return (net, report.loaded, t.keys.filter { !known.contains($0) }.sorted())
    }
}

/// Imported tensors as a `TensorSource` (counters arrive as numbers).
struct ImportedTensorSource: TensorSource {
    let tensors: [String: ImportedTensor]
    let path: String
    var description: String { "'\(path)'" }

    func tensor(_ name: String) throws -> (shape: [Int], values: [Float])? { tensors[name].map { ($0.shape, $0.values) } }
    func counter(_ name: String) throws -> Int64? { tensors[name].map { Int64($0.values.first ?? 0) } }
}
