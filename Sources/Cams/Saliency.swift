import Foundation
import Net

/// dLoss/dx for the cross-entropy of `labels` (the "gradient of the loss with
/// respect to the input"), in eval mode: (N, C, H, W), signed. Absolute values
/// or channel maxima are a rendering choice left to the caller.
public func inputGradient(net: ResNet, x: Tensor, labels: [Int]) -> Tensor {
    let wasTraining = net.training
    net.setTraining(false)
    defer { net.setTraining(wasTraining) }
    let d = Tensor()
    CrossEntropy().forwardBackward(logits: net.forward(x), labels: labels, dlogits: d)
    net.backward(d, needInputGrad: true)
    let g = Tensor()
    g.copy(from: net.inputGradient)
    return g
}

/// The kernels of the first convolution as one picture: an r x c grid of
/// KH x KW tiles separated by 1-pixel gaps, values mapped symmetrically to
/// [0, 1] (0.5 = zero weight) with one scale for all kernels, so their
/// magnitudes compare. Returns (pixels (channels, height, width) planar, height, width, channels).
public func firstLayerKernels(net: ResNet, columns: Int = 8) -> (pixels: [Float], height: Int, width: Int, channels: Int) {
    let e = net.store.entry(named: "conv1.weight")!
    let OC = e.shape[0], C = e.shape[1], KH = e.shape[2], KW = e.shape[3]
    let w = net.store.read(e)
    let scale = max(w.map { abs($0) }.max() ?? 1, 1e-12)
    let cols = min(columns, OC), rows = (OC + cols - 1) / cols
    let H = rows * (KH + 1) + 1, W = cols * (KW + 1) + 1
    let shownChannels = C == 3 ? 3 : 1
    var out = [Float](repeating: 1, count: shownChannels * H * W)
    for k in 0..<OC {
        let r = k / cols, c = k % cols
        for ch in 0..<shownChannels {
            for y in 0..<KH {
                for x in 0..<KW {
                    // One input channel shown, or the mean over channels when not RGB.
                    var v: Float = 0
                    if C == 3 || C == 1 { v = w[((k * C + (C == 3 ? ch : 0)) * KH + y) * KW + x] } else {
                        for ic in 0..<C { v += w[((k * C + ic) * KH + y) * KW + x] }
                        v /= Float(C)
                    }
                    out[(ch * H + r * (KH + 1) + 1 + y) * W + c * (KW + 1) + 1 + x] = 0.5 + 0.5 * v / scale
                }
            }
        }
    }
    return (out, H, W, shownChannels)
}
