import CDNNL
import Foundation

// A network's eval-mode forward as fused oneDNN inference primitives, built
// from the same description the ONNX export uses (`ResNet.emit`: every
// BatchNorm already folded into its convolution, w' = w k, b' = beta - mean k).
// The recorded graph is compiled into a list of layers:
//   conv -> relu                      one convolution with a ReLU post-op;
//   conv -> add(shortcut) -> relu     one convolution with sum and ReLU post-ops, writing onto the
//                                     shortcut's buffer (the shortcut is computed first and read by
//                                     nothing after the add);
//   max pool                          oneDNN pooling;
//   global average pool -> linear     the head, here in fp32.
// Activations stay in one layout (bf16 NHWC in bf16, fp32 nChw16c in fp32, NHWC for widths
// that are not multiples of 16) in
// a few buffers reused by liveness, with no gradient or statistics buffers and
// no BatchNorm pass. In bf16 every activation is stored as bfloat16 (PyTorch's
// CPU autocast keeps convolution outputs so); in fp32 it computes the function
// of the plain forward with another rounding order (FusedInferenceTests
// bounds the difference per layer).
//
// A snapshot: weights changed after `init` are not seen (build a new one).

/// Why a network cannot run fused: a graph this compiler does not know, or oneDNN refused a primitive.
public struct FusedInferenceError: Error, CustomStringConvertible {
    public let description: String
    /// A refusal by design (weights out of the range the fused path is for), not a failure worth a message.
    public let expected: Bool
    init(_ d: String, expected: Bool = false) { description = d; self.expected = expected }
}

public final class FusedInference {
    /// bf16 operands and activations (the run's precision), else fp32.
    public let bf16: Bool
    /// The activations' layout (CDNNL's mode): 1 bf16 NHWC; in fp32 0, oneDNN's blocked nChw16c, where every
    /// channel count is a multiple of 16 (every torchvision width), else 2, NHWC.
    private var mode: Int32 = 0
    public let inChannels: Int
    public let numClasses: Int

    private struct Layer {
        let handle: OpaquePointer
        let input: Int        // buffer index; -1: the network's input
        let output: Int
        let C, OC, K, stride, pad: Int
    }
    private var layers: [Layer] = []
    private var bufferCount = 0
    private var finalBuffer = 0, finalChannels = 0
    private var fcWeight: [Float] = [], fcBias: [Float] = []
    private var buffers: [UnsafeMutableRawPointer] = []
    private var bufferBytes = 0
    private var plain = Tensor()

    /// `net`'s eval-mode forward from its weights and running statistics now. Needs the oneDNN backend.
    public init(_ net: ResNet) throws {
        guard net.engine.backend == .onednn else { throw FusedInferenceError("fused inference needs the oneDNN backend") }
        bf16 = net.engine.precision == .bf16
        inChannels = net.config.inChannels
        numClasses = net.config.numClasses
        let graph = Recorder()
        let logits = net.emit(into: graph, input: "input")
        try compile(graph, logits: logits)
    }

    /// A graph written by hand (tests), from the tensor named "input".
    init(_ graph: Recorder, logits: String, inChannels: Int, numClasses: Int, bf16: Bool) throws {
        self.bf16 = bf16; self.inChannels = inChannels; self.numClasses = numClasses
        try compile(graph, logits: logits)
    }

    deinit {
        for l in layers { dt_dnnl_fused_free(l.handle) }
        for b in buffers { b.deallocate() }
    }

    /// The oneDNN implementations the layers ran on last (for `bench --profile` and tests), one per layer.
    public var implementations: [String] { layers.map { String(cString: dt_dnnl_fused_impl($0.handle)) } }

    /// Logits (N, numClasses) of x (N, inChannels, H, W), plain fp32 NCHW, normalised as the network's input.
    public func logits(_ x: Tensor) throws -> Tensor {
        let map = try lastMap(x)
        let N = map.shape[0], C = map.shape[1], P = map.shape[2] * map.shape[3]
        let out = Tensor([N, numClasses])
        var feature = [Float](repeating: 0, count: C)
        for n in 0..<N {
            for c in 0..<C {
                let row = map.data + (n * C + c) * P
                var s: Float = 0
                for p in 0..<P { s += row[p] }
                feature[c] = s / Float(P)
            }
            for o in 0..<numClasses {
                var s: Float = 0
                for c in 0..<C { s += fcWeight[o * C + c] * feature[c] }
                out.data[n * numClasses + o] = s + fcBias[o]
            }
        }
        return out
    }

    /// The map the head pools, as plain fp32 NCHW (a buffer of this object's, valid until the next call).
    func lastMap(_ x: Tensor) throws -> Tensor {
        precondition(x.shape.count == 4 && x.shape[1] == inChannels && !x.channelsLast && !x.bf16,
                     "fused inference takes (N, \(inChannels), H, W) fp32 NCHW, got \(x.shape)")
        let N = x.shape[0]
        // Every buffer holds the largest activation of this shape (4 bytes an element covers both layouts).
        var shapes = [(C: Int, H: Int, W: Int)](repeating: (0, 0, 0), count: bufferCount)
        var largest = 0, h = x.shape[2], w = x.shape[3]
        var dims = [(H: Int, W: Int)]()
        for l in layers {
            let (ih, iw) = l.input < 0 ? (x.shape[2], x.shape[3]) : (shapes[l.input].H, shapes[l.input].W)
            h = (ih + 2 * l.pad - l.K) / l.stride + 1; w = (iw + 2 * l.pad - l.K) / l.stride + 1
            guard h >= 1, w >= 1 else { throw FusedInferenceError("an input of \(x.shape[2])x\(x.shape[3]) is too small for the network") }
            shapes[l.output] = (l.OC, h, w)
            dims.append((ih, iw))
            largest = max(largest, N * l.OC * h * w * 4)
        }
        if largest > bufferBytes {
            for b in buffers { b.deallocate() }
            buffers = (0..<bufferCount).map { _ in UnsafeMutableRawPointer.allocate(byteCount: largest, alignment: 64) }
            bufferBytes = largest
        }
        for (l, d) in zip(layers, dims) {
            let src = l.input < 0 ? UnsafeRawPointer(x.data) : UnsafeRawPointer(buffers[l.input])
            if dt_dnnl_fused_run(l.handle, Int32(N), Int32(d.H), Int32(d.W), src, l.input < 0 ? 1 : 0, buffers[l.output]) != 0 {
                throw FusedInferenceError(String(cString: dt_dnnl_error()))
            }
        }
        // The head (global pool, linear) reads it in fp32.
        let last = shapes[finalBuffer], C = finalChannels
        plain.resize([N, C, last.H, last.W])
        if dt_dnnl_fused_plain(Int32(N), Int32(C), Int32(last.H), Int32(last.W), mode, buffers[finalBuffer], plain.data) != 0 {
            throw FusedInferenceError(String(cString: dt_dnnl_error()))
        }
        return plain
    }

    // MARK: compiling the recorded graph

    private struct Node {
        var kind: Recorder.Op
        var output: String
        var relu = false
        var sum: String?       // the shortcut this convolution adds onto (and writes over)
    }

    /// Folded weights and biases beyond this magnitude (a trained ResNet's are below 100) are left to the plain
    /// forward: oneDNN's ReLU turns a NaN into 0, so an overflow inside the fused network could end in finite,
    /// wrong logits, where the plain forward's stay non-finite and eval and predict refuse them.
    public static let weightLimit: Float = 1e6

    private func compile(_ g: Recorder, logits: String) throws {
        for (name, c) in g.constants where !c.values.allSatisfy({ $0.isFinite && abs($0) <= Self.weightLimit }) {
            throw FusedInferenceError("'\(name)' holds values beyond \(Self.weightLimit) in magnitude", expected: true)
        }
        // Readers of each tensor, and the last operation that reads it, to know what a fusion may overwrite or drop.
        var readers: [String: Int] = [:], lastReader: [String: Int] = [:]
        for (i, op) in g.ops.enumerated() { for t in op.inputs { readers[t, default: 0] += 1; lastReader[t] = i } }
        var nodes: [Node] = []
        func producer(_ t: String) -> Int? { nodes.lastIndex { $0.output == t } }
        var pooled: String?, features: String?, linear: (weight: String, bias: String, out: String)?
        for (i, op) in g.ops.enumerated() {
            switch op {
            case .conv(_, _, _, _, _, _, let out), .maxPool(_, _, _, _, let out):
                nodes.append(Node(kind: op, output: out))
            case .relu(let x, let out):
                guard let k = producer(x), case .conv = nodes[k].kind, !nodes[k].relu, readers[x] == 1
                else { throw FusedInferenceError("a ReLU not after a convolution read by it alone (\(x))") }
                nodes[k].relu = true; nodes[k].output = out
            case .add(let a, let b, let out):
                // The branch: a convolution without a ReLU that only this add reads; the other operand is the shortcut.
                func branch(_ t: String) -> Int? {
                    guard let k = producer(t), case .conv = nodes[k].kind, !nodes[k].relu, nodes[k].sum == nil, readers[t] == 1
                    else { return nil }
                    return k
                }
                guard let pair = branch(a).map({ ($0, b) }) ?? branch(b).map({ ($0, a) })
                else { throw FusedInferenceError("an add without a convolution branch (\(a) + \(b))") }
                let (k, shortcut) = pair
                guard lastReader[shortcut] == i, producer(shortcut) != nil
                else { throw FusedInferenceError("a shortcut read after its add, or the network's input (\(shortcut))") }
                // The convolution runs once the shortcut is made (its own input is older still), onto the shortcut.
                var n = nodes.remove(at: k)
                n.sum = shortcut; n.output = out
                nodes.append(n)
            case .globalAveragePool(let x, let out):
                guard x == nodes.last?.output, pooled == nil else { throw FusedInferenceError("a global pool not on the last map") }
                pooled = out
            case .flatten(let x, let out):
                guard x == pooled, features == nil else { throw FusedInferenceError("a flatten not after the global pool") }
                features = out
            case .linear(let x, let w, let b, let out):
                guard x == features, linear == nil else { throw FusedInferenceError("a linear layer not on the features") }
                linear = (w, b, out)
            }
        }
        guard let fc = linear, fc.out == logits, let last = nodes.last, let w = g.constants[fc.weight], let b = g.constants[fc.bias]
        else { throw FusedInferenceError("the graph does not end in global pool, flatten, linear") }
        fcWeight = w.values; fcBias = b.values
        let blocked = nodes.allSatisfy { n in
            if case .conv(_, let wName, _, _, _, _, _) = n.kind { return (g.constants[wName]?.shape.first ?? 0) % 16 == 0 }
            return true
        }
        mode = bf16 ? 1 : blocked ? 0 : 2

        // Buffers by liveness: a tensor's buffer is free after its last use; a sum takes over its shortcut's buffer.
        var uses: [String: Int] = [:]
        for n in nodes { uses[n.kind.inputs[0], default: 0] += 1; if let s = n.sum { uses[s, default: 0] += 1 } }
        var bufferOf: [String: Int] = [:], free: [Int] = [], channels: [String: Int] = ["input": inChannels]
        for n in nodes {
            let x = n.kind.inputs[0]
            let out: Int
            if let s = n.sum {
                uses[s]! -= 1
                guard uses[s] == 0, let b = bufferOf[s] else { throw FusedInferenceError("a shortcut still needed after its add (\(s))") }
                out = b
            } else if let b = free.popLast() {
                out = b
            } else {
                out = bufferCount; bufferCount += 1
            }
            uses[x]! -= 1
            if uses[x] == 0, let b = bufferOf[x], b != out { free.append(b) }
            bufferOf[n.output] = out
            guard let C = channels[x] else { throw FusedInferenceError("a layer on an unknown tensor (\(x))") }
            let handle: OpaquePointer?
            let (OC, K, stride, pad): (Int, Int, Int, Int)
            switch n.kind {
            case .conv(_, let wName, let bName, let k, let s, let p, _):
                guard let wc = g.constants[wName], let bc = g.constants[bName], wc.shape.count == 4, wc.shape[1] == C,
                      wc.shape[2] == k, wc.shape[3] == k, bc.values.count == wc.shape[0]
                else { throw FusedInferenceError("a convolution's weights do not fit \(C) channels, kernel \(k) (\(wName))") }
                (OC, K, stride, pad) = (wc.shape[0], k, s, p)
                handle = wc.values.withUnsafeBufferPointer { w in
                    bc.values.withUnsafeBufferPointer { b in
                        dt_dnnl_fused_conv_new(Int32(C), Int32(OC), Int32(k), Int32(s), Int32(p), w.baseAddress, b.baseAddress,
                                               mode, n.sum == nil ? 0 : 1, n.relu ? 1 : 0)
                    }
                }
            case .maxPool(_, let k, let s, let p, _):
                (OC, K, stride, pad) = (C, k, s, p)
                handle = dt_dnnl_fused_maxpool_new(Int32(C), Int32(k), Int32(s), Int32(p), mode)
            default: preconditionFailure("only convolutions and pools are nodes")
            }
            channels[n.output] = OC
            layers.append(Layer(handle: handle!, input: bufferOf[x] ?? -1, output: out, C: C, OC: OC, K: K, stride: stride, pad: pad))
        }
        finalBuffer = bufferOf[last.output]!
        finalChannels = channels[last.output]!
    }
}

/// The graph as `ResNet.emit` writes it: operations in order and the constants they name.
final class Recorder: InferenceGraph {
    enum Op {
        case conv(String, weight: String, bias: String, kernel: Int, stride: Int, pad: Int, String)
        case relu(String, String)
        case add(String, String, String)
        case maxPool(String, kernel: Int, stride: Int, pad: Int, String)
        case globalAveragePool(String, String)
        case flatten(String, String)
        case linear(String, weight: String, bias: String, String)

        /// The activations it reads (not its constants).
        var inputs: [String] {
            switch self {
            case .conv(let x, _, _, _, _, _, _), .relu(let x, _), .maxPool(let x, _, _, _, _), .globalAveragePool(let x, _),
                 .flatten(let x, _), .linear(let x, _, _, _): return [x]
            case .add(let a, let b, _): return [a, b]
            }
        }
    }
    private(set) var ops: [Op] = []
    private(set) var constants: [String: (shape: [Int], values: [Float])] = [:]
    private var used = Set<String>()

    func uniqueName(_ base: String) -> String {
        var name = base, k = 1
        while used.contains(name) { name = "\(base)_\(k)"; k += 1 }
        used.insert(name)
        return name
    }
    func constant(_ name: String, shape: [Int], _ values: [Float]) -> String {
        constants[name] = (shape, values); used.insert(name); return name
    }
    func conv(_ x: String, weight: String, bias: String, kernel: Int, stride: Int, pad: Int, named: String) -> String {
        ops.append(.conv(x, weight: weight, bias: bias, kernel: kernel, stride: stride, pad: pad, named)); return named
    }
    func relu(_ x: String, named: String) -> String { ops.append(.relu(x, named)); return named }
    func add(_ a: String, _ b: String, named: String) -> String { ops.append(.add(a, b, named)); return named }
    func maxPool(_ x: String, kernel: Int, stride: Int, pad: Int, named: String) -> String {
        ops.append(.maxPool(x, kernel: kernel, stride: stride, pad: pad, named)); return named
    }
    func globalAveragePool(_ x: String, named: String) -> String { ops.append(.globalAveragePool(x, named)); return named }
    func flatten(_ x: String, named: String) -> String { ops.append(.flatten(x, named)); return named }
    func linear(_ x: String, weight: String, bias: String, named: String) -> String {
        ops.append(.linear(x, weight: weight, bias: bias, named)); return named
    }
}
