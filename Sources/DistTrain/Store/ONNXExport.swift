import Foundation
import Net

/// The inference graph of a trained ResNet as ONNX (opset 17), written by our
/// own protobuf encoder (onnx/onnx.proto field numbers):
///   image [batch, C, S, S] (normalised as the metadata says) -> Conv (BatchNorm
///   folded in) -> Relu -> MaxPool -> residual blocks (Conv, Relu, Add) ->
///   GlobalAveragePool -> Flatten -> Gemm -> Softmax -> probabilities [batch, K].
/// BN folding, per output channel o: w' = w * gamma / sqrt(var + eps),
/// b' = beta - mean * gamma / sqrt(var + eps) (eval mode, as inference uses).
/// The graph is rebuilt from the state_dict names with torchvision's rules
/// (v1.5 strides), so it is the network disttrain evaluates.
public enum ONNXExport {
    public static let opset = 17

    public struct Metadata: Sendable {
        public var mean: [Double], std: [Double], classNames: [String], imageSize: Int, arch: String
        /// The run's HU window (a `--window` argument: lung, mediastinum, W,L); "" for PNG/JPEG runs.
        public var window: String = ""

        public init(mean: [Double], std: [Double], classNames: [String], imageSize: Int, arch: String) {
            self.mean = mean; self.std = std; self.classNames = classNames; self.imageSize = imageSize; self.arch = arch
        }
    }

    // onnx.proto enums
    static let float32 = 1, attrFloat = 1, attrInt = 2, attrString = 3, attrInts = 7

    public static func model(_ net: ResNet, metadata: Metadata) -> [UInt8] {
        let s = net.store
        func values(_ name: String) -> [Float] { s.read(s.entry(named: name)!) }
        var nodes: [[UInt8]] = [], initializers: [[UInt8]] = []
        var counter = 0
        func fresh(_ base: String) -> String { counter += 1; return "\(base)_\(counter)" }

        func tensor(_ name: String, dims: [Int], _ v: [Float]) {
            var t = ProtoWriter()
            for d in dims { t.int(1, Int64(d)) }
            t.int(2, Int64(float32))
            t.string(8, name)
            t.data(9, v.withUnsafeBytes { [UInt8]($0) })  // raw_data, little endian float32
            initializers.append(t.bytes)
        }
        func node(_ op: String, _ inputs: [String], _ output: String, ints: [(String, [Int])] = [], int: [(String, Int)] = []) {
            var n = ProtoWriter()
            for i in inputs { n.string(1, i) }
            n.string(2, output)
            n.string(3, output)
            n.string(4, op)
            for (name, v) in ints { n.message(5) { a in a.string(1, name); for x in v { a.int(8, Int64(x)) }; a.int(20, Int64(attrInts)) } }
            for (name, v) in int { n.message(5) { a in a.string(1, name); a.int(3, Int64(v)); a.int(20, Int64(attrInt)) } }
            nodes.append(n.bytes)
        }
        /// conv `c` with BN `b` folded in, from `input`; returns its output name.
        func convBN(_ c: String, _ b: String, _ input: String, stride: Int, relu: Bool) -> String {
            let e = s.entry(named: c + ".weight")!
            let (OC, K) = (e.shape[0], e.shape[2])
            var w = values(c + ".weight")
            let gamma = values(b + ".weight"), beta = values(b + ".bias"), mean = values(b + ".running_mean")
            let variance = values(b + ".running_var")
            var bias = [Float](repeating: 0, count: OC)
            let per = w.count / OC
            for o in 0..<OC {
                let k = gamma[o] / (variance[o] + 1e-5).squareRoot()
                for i in 0..<per { w[o * per + i] *= k }
                bias[o] = beta[o] - mean[o] * k
            }
            tensor(c + ".weight", dims: e.shape, w)
            tensor(c + ".bias", dims: [OC], bias)
            let out = fresh(c)
            node("Conv", [input, c + ".weight", c + ".bias"], out, ints: [("kernel_shape", [K, K]), ("strides", [stride, stride]),
                                                                        ("pads", [K / 2, K / 2, K / 2, K / 2])])
            guard relu else { return out }
            let r = fresh(c + "_relu")
            node("Relu", [out], r)
            return r
        }

        let arch = net.config.arch
        var x = convBN("conv1", "bn1", "image", stride: 2, relu: true)
        let pooled = fresh("maxpool")
        node("MaxPool", [x], pooled, ints: [("kernel_shape", [3, 3]), ("strides", [2, 2]), ("pads", [1, 1, 1, 1])])
        x = pooled
        for (stage, blocks) in arch.layerBlockSizes.enumerated() {
            for b in 0..<blocks {
                let p = "layer\(stage + 1).\(b)."
                let stride = b == 0 && stage > 0 ? 2 : 1
                var y: String
                if arch.usesBasicBlocks {
                    y = convBN(p + "conv1", p + "bn1", x, stride: stride, relu: true)
                    y = convBN(p + "conv2", p + "bn2", y, stride: 1, relu: false)
                } else {  // v1.5: the stride sits on the 3x3 conv
                    y = convBN(p + "conv1", p + "bn1", x, stride: 1, relu: true)
                    y = convBN(p + "conv2", p + "bn2", y, stride: stride, relu: true)
                    y = convBN(p + "conv3", p + "bn3", y, stride: 1, relu: false)
                }
                let shortcut = s.entry(named: p + "downsample.0.weight") != nil
                    ? convBN(p + "downsample.0", p + "downsample.1", x, stride: stride, relu: false) : x
                let sum = fresh(p + "add"), out = fresh(p + "relu")
                node("Add", [y, shortcut], sum)
                node("Relu", [sum], out)
                x = out
            }
        }
        node("GlobalAveragePool", [x], "pooled")
        node("Flatten", ["pooled"], "features", int: [("axis", 1)])
        let fc = s.entry(named: "fc.weight")!
        tensor("fc.weight", dims: fc.shape, values("fc.weight"))
        tensor("fc.bias", dims: [fc.shape[0]], values("fc.bias"))
        node("Gemm", ["features", "fc.weight", "fc.bias"], "logits", int: [("transB", 1)])
        node("Softmax", ["logits"], "probabilities", int: [("axis", 1)])

        func valueInfo(_ name: String, _ dims: [Any]) -> [UInt8] {
            var v = ProtoWriter()
            v.string(1, name)
            v.message(2) { t in t.message(1) { tt in
                tt.int(1, Int64(float32))
                tt.message(2) { shape in for d in dims { shape.message(1) { dim in
                    if let n = d as? Int { dim.int(1, Int64(n)) } else { dim.string(2, "\(d)") }
                } } }
            } }
            return v.bytes
        }
        let S = metadata.imageSize, C = net.config.inChannels, K = net.config.numClasses
        var graph = ProtoWriter()
        for n in nodes { graph.data(1, n) }
        graph.string(2, "disttrain-\(metadata.arch)")
        for t in initializers { graph.data(5, t) }
        graph.data(11, valueInfo("image", ["batch", C, S, S]))
        graph.data(12, valueInfo("probabilities", ["batch", K]))
        var m = ProtoWriter()
        m.int(1, 8)  // ir_version 8 (onnx 1.10+), which opset 17 needs at least
        m.string(2, "disttrain")
        m.message(8) { o in o.string(1, ""); o.int(2, Int64(opset)) }
        m.data(7, graph.bytes)
        let props: [(String, String)] = [
            ("arch", metadata.arch), ("input_size", "\(S)"), ("input_channels", "\(C)"),
            ("mean", metadata.mean.map { "\($0)" }.joined(separator: ",")), ("std", metadata.std.map { "\($0)" }.joined(separator: ",")),
            ("normalisation", "input = (pixel / 255 - mean) / std, per channel, gray replicated into the channels"),
            ("class_names", metadata.classNames.joined(separator: ",")), ("window", metadata.window), ("output", "softmax probabilities"),
        ]
        for (k, v) in props { m.message(14) { p in p.string(1, k); p.string(2, v) } }
        return m.bytes
    }
}
