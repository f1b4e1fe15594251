// A convolution and its BatchNorm (ReLU fused into the BN when `relu`):
// torchvision's `conv1, bn1` pairs and `downsample.0, downsample.1`.
// Exported with the BN folded into the convolution, per output channel o
// (eval mode, the running statistics): w' = w * k, b' = beta - mean * k,
// k = gamma / sqrt(var + eps).

/// `feedsConvolution`: the output's only reader is the next convolution of a residual branch.
struct ConvBN: Block {
    /// The convolution's state_dict name (`layer1.0.conv1`); its folded bias is exported as `<name>.bias`.
    let name: String
    let conv: Conv2d
    let bn: BatchNorm2d
    let feedsConvolution: Bool
    init(_ l: Layers, conv cname: String, bn bname: String,
         C: Int, OC: Int, kernel: Int, stride: Int, pad: Int, relu: Bool, feedsConvolution: Bool = false) {
        name = cname
        conv = Conv2d(store: l.store, ws: l.ws, name: cname, C: C, OC: OC, kernel: kernel, stride: stride, pad: pad, engine: l.engine,
                      profiler: l.profiler)
        bn = BatchNorm2d(store: l.store, name: bname, C: OC, relu: relu, engine: l.engine)
        self.feedsConvolution = feedsConvolution
    }

    var batchNorms: [BatchNorm2d] { [bn] }
    var firstParameterOffset: Int { min(conv.weight.offset, bn.weight.offset, bn.bias.offset) }

    func initialize(_ rng: inout Xoshiro256) {
        conv.initializeKaiming(&rng)
        bn.resetParameters()
    }

    func forward(_ x: Tensor) -> Tensor {
        let y = conv.forward(x)
        // On oneDNN in bf16 an output only a convolution reads goes to it as bfloat16, its operand type.
        return conv.profiler.measure(.batchNorm) { bn.forward(y, bf16Output: feedsConvolution && conv.engine.channelsLast) }
    }

    /// Returns dL/dx (conv.dinput) when needed.
    func backward(_ dy: Tensor, needInputGrad: Bool) -> Tensor {
        // On oneDNN in bf16 the gradient goes to the convolution as bfloat16, its operand type: no conversion pass.
        conv.profiler.measure(.batchNorm) { bn.backward(dy, bf16Gradient: conv.engine.channelsLast) }
        conv.backward(bn.dinput, needInputGrad: needInputGrad)
        return conv.dinput
    }

    func emit(into graph: InferenceGraph, _ x: String) -> String {
        let store = conv.store
        let OC = conv.OC
        var w = store.read(conv.weight)
        let gamma = store.read(bn.weight), beta = store.read(bn.bias)
        let mean = store.read(bn.runningMean), variance = store.read(bn.runningVar)
        var bias = [Float](repeating: 0, count: OC)
        let per = w.count / OC
        for o in 0..<OC {
            let k = gamma[o] / (variance[o] + bn.eps).squareRoot()
            for i in 0..<per { w[o * per + i] *= k }
            bias[o] = beta[o] - mean[o] * k
        }
        let weight = graph.constant(name + ".weight", shape: [OC, conv.C, conv.KH, conv.KW], w)
        let folded = graph.constant(name + ".bias", shape: [OC], bias)
        let y = graph.conv(x, weight: weight, bias: folded, kernel: conv.KH, stride: conv.stride, pad: conv.pad,
                           named: graph.uniqueName(name))
        return bn.fusedReLU ? graph.relu(y, named: graph.uniqueName(name + "_relu")) : y
    }
}
