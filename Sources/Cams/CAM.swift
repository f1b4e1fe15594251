import Foundation
import Net

// Class Activation Maps, after jacobgil/pytorch-grad-cam (base_cam.py): one
// pipeline owns forward, target, backward, ReLU, resize and normalisation; a
// method only turns the target layer's activations A and gradients
// G = dScore/dA, both (N, C, h, w), into an (N, h, w) map.
//
// The score explained is a logit (pytorch-grad-cam's ClassifierOutputTarget):
// of the predicted class by default, or of a given class.

/// What to explain.
public enum CAMTarget: Sendable, Equatable {
    case predicted
    case classIndex(Int)
}

/// The methods, named as pytorch-grad-cam's classes (lower case).
public enum CAMKind: String, CaseIterable, Sendable, Codable {
    case gradcam, hirescam, eigencam, gradcamplusplus, xgradcam, layercam, eigengradcam, scorecam, ablationcam

    public var method: CAMMethod {
        switch self {
        case .gradcam: return GradCAM()
        case .hirescam: return HiResCAM()
        case .eigencam: return EigenCAM()
        case .gradcamplusplus: return GradCAMPlusPlus()
        case .xgradcam: return XGradCAM()
        case .layercam: return LayerCAM()
        case .eigengradcam: return EigenGradCAM()
        case .scorecam: return ScoreCAM()
        case .ablationcam: return AblationCAM()
        }
    }
}

/// What a method sees. `A` and `G` are (N, C, h, w); `G` is nil for methods
/// that need no gradients. `context` runs the extra forwards of the
/// perturbation methods (ScoreCAM, AblationCAM).
public struct CAMInput {
    public let A: Tensor
    public let G: Tensor?
    public let targets: [Int]
    /// Present when the input came through a CAMExplainer.
    public let context: CAMContext?
    public var N: Int { A.shape[0] }

    public init(A: Tensor, G: Tensor?, targets: [Int], context: CAMContext? = nil) {
        self.A = A; self.G = G; self.targets = targets; self.context = context
    }
    public var C: Int { A.shape[1] }
    public var hw: Int { A.shape[2] * A.shape[3] }
}

public protocol CAMMethod {
    var needsGradients: Bool { get }
    /// Per image and channel weights w[n][c] (N*C), for methods of the form sum_c w_c A_c.
    func channelWeights(_ input: CAMInput) -> [Float]
    /// The map before ReLU and normalisation, (N, h*w). Default: sum_c w_c A_c.
    func saliency(_ input: CAMInput) -> [Float]
}

extension CAMMethod {
    public func saliency(_ input: CAMInput) -> [Float] {
        let w = channelWeights(input)
        let N = input.N, C = input.C, hw = input.hw
        var out = [Float](repeating: 0, count: N * hw)
        let a = input.A.data
        for n in 0..<N {
            for c in 0..<C {
                let wc = w[n * C + c]
                if wc == 0 { continue }
                let row = a + (n * C + c) * hw
                for p in 0..<hw { out[n * hw + p] += wc * row[p] }
            }
        }
        return out
    }
}

/// Forwards a method may run besides the first.
public final class CAMContext {
    let net: ResNet
    let layer: String
    let input: Tensor
    /// Images per extra forward (ScoreCAM's masked inputs, AblationCAM's ablations).
    public var batchSize = 32

    init(net: ResNet, layer: String, input: Tensor) { self.net = net; self.layer = layer; self.input = input }

    /// The target logits of `inputs` (B, ...), one per row, for class `target`.
    func scores(of inputs: Tensor, target: Int) -> [Float] {
        let logits = net.forward(inputs)
        let K = logits.shape[1]
        return (0..<logits.shape[0]).map { logits[$0 * K + target] }
    }

    /// Target logits with the target layer's activation replaced: runs only
    /// the network after the target layer.
    func scoresFromLayer(_ activations: Tensor, target: Int) -> [Float] {
        let logits = net.forwardRest(after: layer, activation: activations)
        let K = logits.shape[1]
        return (0..<logits.shape[0]).map { logits[$0 * K + target] }
    }
}

/// Runs CAM methods on a network at a named layer (default `layer4`).
public final class CAMExplainer {
    public let net: ResNet
    public let layer: String

    public init(net: ResNet, layer: String = "layer4") throws {
        guard net.capturableLayers.contains(layer) else {
            throw CAMError("no layer '\(layer)' to explain; choose one of \(net.capturableLayers.joined(separator: ", "))")
        }
        self.net = net
        self.layer = layer
    }

    /// Maps for `x` (N, C, H, W) as (N, H*W) in [0, 1], with the classes explained.
    /// The network is used in eval mode (as pytorch-grad-cam's BaseCAM does).
    public func explain(_ x: Tensor, method kind: CAMKind, target: CAMTarget = .predicted) -> (maps: [Float], targets: [Int]) {
        let raw = rawMaps(x, method: kind.method, target: target)
        let H = x.shape[2], W = x.shape[3]
        let N = x.shape[0], h = raw.h, w = raw.w
        var out = [Float](repeating: 0, count: N * H * W)
        for n in 0..<N {
            // pytorch-grad-cam: ReLU, min-max, resize (cv2 bilinear), min-max again.
            var m = Array(raw.maps[(n * h * w)..<((n + 1) * h * w)]).map { max($0, 0) }
            normalizeMinMax(&m)
            var up = resizeBilinear(m, h: h, w: w, H: H, W: W)
            normalizeMinMax(&up)
            out.replaceSubrange((n * H * W)..<((n + 1) * H * W), with: up)
        }
        return (out, raw.targets)
    }

    /// The method's map at the layer's resolution, before ReLU: (N, h*w).
    public func rawMaps(_ x: Tensor, method: CAMMethod, target: CAMTarget) -> (maps: [Float], h: Int, w: Int, targets: [Int]) {
        let wasTraining = net.training
        net.setTraining(false)
        defer { net.setTraining(wasTraining) }
        let logits = net.forward(x)
        let N = logits.shape[0], K = logits.shape[1]
        let targets: [Int] = (0..<N).map { n in
            switch target {
            case .classIndex(let k): return k
            case .predicted:
                var best = 0
                for k in 1..<K where logits[n * K + k] > logits[n * K + best] { best = k }
                return best
            }
        }
        // Copy A now: later forwards (ScoreCAM) overwrite the layer's output.
        let A = Tensor()
        A.copy(from: net.activation(named: layer)!)
        var G: Tensor? = nil
        if method.needsGradients {
            let seed = Tensor([N, K])
            for n in 0..<N { seed[n * K + targets[n]] = 1 }
            // Parameter gradients accumulate as a side effect; callers that
            // train afterwards zero them first, as every training step does.
            net.backward(seed)
            let g = Tensor()
            g.copy(from: net.gradient(named: layer)!)
            G = g
        }
        let input = CAMInput(A: A, G: G, targets: targets, context: CAMContext(net: net, layer: layer, input: x))
        return (method.saliency(input), A.shape[2], A.shape[3], targets)
    }
}

public struct CAMError: Error, CustomStringConvertible {
    public let description: String
    init(_ s: String) { description = s }
}

// MARK: shared helpers

/// x -> (x - min) / (max - min + 1e-7), pytorch-grad-cam's scale_cam_image.
func normalizeMinMax(_ v: inout [Float]) {
    guard let lo = v.min(), let hi = v.max() else { return }
    let s = 1 / (hi - lo + 1e-7)
    for i in v.indices { v[i] = (v[i] - lo) * s }
}

/// Bilinear resize with half-pixel centres and clamped borders (OpenCV's
/// INTER_LINEAR, which pytorch-grad-cam uses).
public func resizeBilinear(_ src: [Float], h: Int, w: Int, H: Int, W: Int) -> [Float] {
    var out = [Float](repeating: 0, count: H * W)
    let sy = Double(h) / Double(H), sx = Double(w) / Double(W)
    for y in 0..<H {
        let fy = max(0, (Double(y) + 0.5) * sy - 0.5)
        let y0 = min(Int(fy), h - 1), y1 = min(y0 + 1, h - 1), wy = Float(fy - Double(y0))
        for x in 0..<W {
            let fx = max(0, (Double(x) + 0.5) * sx - 0.5)
            let x0 = min(Int(fx), w - 1), x1 = min(x0 + 1, w - 1), wx = Float(fx - Double(x0))
            out[y * W + x] = (1 - wy) * ((1 - wx) * src[y0 * w + x0] + wx * src[y0 * w + x1])
                + wy * ((1 - wx) * src[y1 * w + x0] + wx * src[y1 * w + x1])
        }
    }
    return out
}

/// Bilinear resize with align_corners = True (torch.nn.UpsamplingBilinear2d,
/// which ScoreCAM uses for its masks).
func resizeBilinearAlignCorners(_ src: UnsafePointer<Float>, h: Int, w: Int, H: Int, W: Int, into out: UnsafeMutablePointer<Float>) {
    let sy = H > 1 ? Double(h - 1) / Double(H - 1) : 0, sx = W > 1 ? Double(w - 1) / Double(W - 1) : 0
    for y in 0..<H {
        let fy = Double(y) * sy
        let y0 = min(Int(fy), h - 1), y1 = min(y0 + 1, h - 1), wy = Float(fy - Double(y0))
        for x in 0..<W {
            let fx = Double(x) * sx
            let x0 = min(Int(fx), w - 1), x1 = min(x0 + 1, w - 1), wx = Float(fx - Double(x0))
            out[y * W + x] = (1 - wy) * ((1 - wx) * src[y0 * w + x0] + wx * src[y0 * w + x1])
                + wy * ((1 - wx) * src[y1 * w + x0] + wx * src[y1 * w + x1])
        }
    }
}
