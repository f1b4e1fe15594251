// The stem: conv1 (7x7, stride 2) + bn1 + ReLU, then a 3x3 stride-2 max pool:
// (N, C, H, W) -> (N, width, H/4, W/4).

final class Stem: Block {
    let convBN: ConvBN
    let maxpool: MaxPool2d
    let profiler: Profiler
    /// dL/d(maxpool output) seen by the last backward (for CAM capture); layer1.0's input gradient.
    private(set) var lastOutputGrad: Tensor?

    init(_ l: Layers, inChannels: Int, width: Int) {
        convBN = ConvBN(l, conv: "conv1", bn: "bn1", C: inChannels, OC: width, kernel: 7, stride: 2, pad: 3, relu: true)
        maxpool = MaxPool2d(kernel: 3, stride: 2, pad: 1, engine: l.engine)
        profiler = l.profiler
    }

    /// The maxpool's output.
    var output: Tensor { maxpool.output }
    /// dL/dx from the last backward that asked for it.
    var inputGradient: Tensor { convBN.conv.dinput }
    var batchNorms: [BatchNorm2d] { convBN.batchNorms }
    var firstParameterOffset: Int { convBN.firstParameterOffset }

    func initialize(_ rng: inout Xoshiro256) { convBN.initialize(&rng) }

    func forward(_ x: Tensor) -> Tensor {
        let s = convBN.forward(x)
        return profiler.measure(.pool) { maxpool.forward(s) }
    }

    func backward(_ dy: Tensor, needInputGrad: Bool) -> Tensor {
        lastOutputGrad = dy
        profiler.measure(.pool) { maxpool.backward(dy) }
        return convBN.backward(maxpool.dinput, needInputGrad: needInputGrad)
    }

    func emit(into graph: InferenceGraph, _ x: String) -> String {
        let s = convBN.emit(into: graph, x)
        return graph.maxPool(s, kernel: maxpool.kernel, stride: maxpool.stride, pad: maxpool.pad, named: graph.uniqueName("maxpool"))
    }
}
