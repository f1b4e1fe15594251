// A block of the network: its parameters (declared in the store when it is
// built, in state_dict order), its forward and backward side by side, its
// initialisation, and how it writes itself into an inference graph. ResNet is
// a list of them (stem, residual blocks, head) and forward, backward, init and
// export walk that list; a new kind of block is a new type conforming here,
// in its own file, and its place in the list (ResNet.init).

/// What the layers of one network share: the parameter buffer, the scratch space, the engine, the profiler.
struct Layers {
    let store: ParameterStore
    let ws: Workspace
    let engine: Engine
    let profiler: Profiler
}

protocol Block {
    /// x -> y; y is a buffer of the block's, valid until its next forward.
    func forward(_ x: Tensor) -> Tensor
    /// dL/dy -> dL/dx (written only when `needInputGrad`); accumulates its parameters' gradients.
    func backward(_ dy: Tensor, needInputGrad: Bool) -> Tensor
    /// Appends its eval-mode forward to `graph`, reading the tensor named `x`; returns its output's name.
    func emit(into graph: InferenceGraph, _ x: String) -> String
    /// torchvision's initialisation of its parameters, drawing from `rng` in state_dict order.
    func initialize(_ rng: inout Xoshiro256)
    /// Its BatchNorms, in state_dict order (train/eval mode, SyncBatchNorm, freezing).
    var batchNorms: [BatchNorm2d] { get }
    /// Where its parameters begin in the parameter buffer (they lie contiguously from there).
    var firstParameterOffset: Int { get }
}

// torchvision's rules, one per kind of layer, for the blocks' `initialize`.

extension Conv2d {
    /// Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (OC * KH * KW)).
    func initializeKaiming(_ rng: inout Xoshiro256) {
        let std = (2.0 / Double(OC * KH * KW)).squareRoot()
        let p = store.values + weight.offset
        for i in 0..<weight.count { p[i] = Float(rng.normal() * std) }
    }
}

extension Linear {
    /// nn.Linear's default: weight, then bias, uniform in +-1/sqrt(fan_in).
    func initializeUniform(_ rng: inout Xoshiro256) {
        let bound = 1 / Double(IN).squareRoot()
        let wp = store.values + weight.offset, bp = store.values + bias.offset
        for i in 0..<weight.count { wp[i] = Float(rng.uniform(-bound, bound)) }
        for i in 0..<bias.count { bp[i] = Float(rng.uniform(-bound, bound)) }
    }
}
