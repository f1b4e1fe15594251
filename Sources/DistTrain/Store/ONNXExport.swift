import Foundation
import SwiftProtobuf
import Net

/// The inference graph of a trained ResNet as ONNX (opset 17), as the messages
/// generated from onnx.proto (proto/onnx/onnx.proto, Sources/DistTrain/Proto):
///   image [batch, C, S, S] (normalised as the metadata says) -> Conv (BatchNorm
///   folded in) -> Relu -> MaxPool -> residual blocks (Conv, Relu, Add) ->
///   GlobalAveragePool -> Flatten -> Gemm -> Softmax -> probabilities [batch, K].
/// The network writes itself into an `ONNXGraph`, the InferenceGraph below
/// (`ResNet.emit`: each block its operations, ConvBN its BatchNorm folded in
/// eval mode), so the graph is the network disttrain evaluates; this file adds
/// the Softmax and frames the graph as a model with its metadata.
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
        let sink = ONNXGraph()
        let logits = net.emit(into: sink, input: "image")
        let probabilities = sink.node("Softmax", [logits], "probabilities", int: [("axis", 1)])
        var graph = sink.graph

        func valueInfo(_ name: String, _ dims: [Any]) -> Onnx_ValueInfoProto {
            var t = Onnx_TypeProto.Tensor()
            t.elemType = ONNXGraph.float32
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
        graph.output = [valueInfo(probabilities, ["batch", K])]
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

/// The ONNX side of `InferenceGraph`: each operation one node, named as the tensor it writes,
/// each constant one initializer, both in the order the network emits them.
private final class ONNXGraph: InferenceGraph {
    static let float32 = Int32(Onnx_TensorProto.DataType.float.rawValue)  // elem_type and data_type are int32 fields
    var graph = Onnx_GraphProto()
    private var counter = 0

    /// `base_N`, N counting the names made so far (conv1_1, conv1_relu_2, maxpool_3, ...).
    func uniqueName(_ base: String) -> String { counter += 1; return "\(base)_\(counter)" }

    func constant(_ name: String, shape: [Int], _ values: [Float]) -> String {
        var t = Onnx_TensorProto()
        t.dims = shape.map { Int64($0) }
        t.dataType = Self.float32
        t.name = name
        t.rawData = values.withUnsafeBytes { Data($0) }  // little endian float32
        graph.initializer.append(t)
        return name
    }

    func conv(_ x: String, weight: String, bias: String, kernel: Int, stride: Int, pad: Int, named: String) -> String {
        node("Conv", [x, weight, bias], named, ints: [("kernel_shape", [kernel, kernel]), ("strides", [stride, stride]),
                                                      ("pads", [pad, pad, pad, pad])])
    }
    func relu(_ x: String, named: String) -> String { node("Relu", [x], named) }
    func add(_ a: String, _ b: String, named: String) -> String { node("Add", [a, b], named) }
    func maxPool(_ x: String, kernel: Int, stride: Int, pad: Int, named: String) -> String {
        node("MaxPool", [x], named, ints: [("kernel_shape", [kernel, kernel]), ("strides", [stride, stride]),
                                           ("pads", [pad, pad, pad, pad])])
    }
    func globalAveragePool(_ x: String, named: String) -> String { node("GlobalAveragePool", [x], named) }
    func flatten(_ x: String, named: String) -> String { node("Flatten", [x], named, int: [("axis", 1)]) }
    func linear(_ x: String, weight: String, bias: String, named: String) -> String {
        node("Gemm", [x, weight, bias], named, int: [("transB", 1)])  // PyTorch's (OUT, IN) weight: y = x W^T + b
    }

    /// One node writing `output`; the attributes in the order given, int lists before ints.
    func node(_ op: String, _ inputs: [String], _ output: String, ints: [(String, [Int])] = [], int: [(String, Int)] = []) -> String {
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
        return output
    }
}
