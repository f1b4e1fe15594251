import Foundation
import SwiftProtobuf
import Net

/// The inference graph of a trained ResNet as ONNX (opset 17), as the messages
/// generated from onnx.proto (proto/onnx/onnx.proto, Sources/DistTrain/Proto):
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

    /// The model's bytes; throws only past protobuf's 2 GiB message limit, which no reader would load.
    public static func model(_ net: ResNet, metadata: Metadata) throws -> [UInt8] {
        let s = net.store
        func values(_ name: String) -> [Float] { s.read(s.entry(named: name)!) }
        var graph = Onnx_GraphProto()
        let float32 = Int32(Onnx_TensorProto.DataType.float.rawValue)  // elem_type and data_type are int32 fields
        var counter = 0
        func fresh(_ base: String) -> String { counter += 1; return "\(base)_\(counter)" }

        func tensor(_ name: String, dims: [Int], _ v: [Float]) {
            var t = Onnx_TensorProto()
            t.dims = dims.map { Int64($0) }
            t.dataType = float32
            t.name = name
            t.rawData = v.withUnsafeBytes { Data($0) }  // little endian float32
            graph.initializer.append(t)
        }
        func node(_ op: String, _ inputs: [String], _ output: String, ints: [(String, [Int])] = [], int: [(String, Int)] = []) {
            var n = Onnx_NodeProto()
            n.input = inputs
            n.output = [output]
            n.name = output
            n.opType = op
            for (name, v) in ints {
                var a = Onnx_AttributeProto()
                a.name = name; a.ints = v.map { Int64($0) }; a.type = .ints
                n.attribute.append(a)
            }
            for (name, v) in int {
                var a = Onnx_AttributeProto()
                a.name = name; a.i = Int64(v); a.type = .int
                n.attribute.append(a)
            }
            graph.node.append(n)
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

        func valueInfo(_ name: String, _ dims: [Any]) -> Onnx_ValueInfoProto {
            var t = Onnx_TypeProto.Tensor()
            t.elemType = float32
            t.shape.dim = dims.map { d in
                var dim = Onnx_TensorShapeProto.Dimension()
                if let n = d as? Int { dim.dimValue = Int64(n) } else { dim.dimParam = "\(d)" }
                return dim
            }
            var v = Onnx_ValueInfoProto()
            v.name = name
            v.type.tensorType = t
            return v
        }
        let S = metadata.imageSize, C = net.config.inChannels, K = net.config.numClasses
        graph.name = "disttrain-\(metadata.arch)"
        graph.input = [valueInfo("image", ["batch", C, S, S])]
        graph.output = [valueInfo("probabilities", ["batch", K])]
        var m = Onnx_ModelProto()
        m.irVersion = 8  // onnx 1.10+, which opset 17 needs at least
        m.producerName = "disttrain"
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""  // the default (ai.onnx) domain, written out as onnx's own tools do
        opset.version = Int64(Self.opset)
        m.opsetImport = [opset]
        m.graph = graph
        let props: [(String, String)] = [
            ("arch", metadata.arch), ("input_size", "\(S)"), ("input_channels", "\(C)"),
            ("mean", metadata.mean.map { "\($0)" }.joined(separator: ",")), ("std", metadata.std.map { "\($0)" }.joined(separator: ",")),
            ("normalisation", "input = (pixel / 255 - mean) / std, per channel, gray replicated into the channels"),
            ("class_names", metadata.classNames.joined(separator: ",")), ("window", metadata.window), ("output", "softmax probabilities"),
        ]
        m.metadataProps = props.map { k, v in
            var p = Onnx_StringStringEntryProto()
            p.key = k; p.value = v
            return p
        }
        // onnx.proto declares no required field, so only the size can fail serialization.
        do {
            return try m.serializedBytes()
        } catch {
            throw RuntimeError("cannot encode the ONNX model (\(metadata.arch)): \(error); protobuf messages stop at 2 GiB")
        }
    }
}
