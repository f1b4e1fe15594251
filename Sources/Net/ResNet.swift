// ResNet-18/34/50 (He et al. 2016) with torchvision's structure and names.
//
// One type, configured by a value (as swift-models' ResNet): `Arch` carries
// the blocks per stage and the block kind. BasicBlock and Bottleneck differ
// by their `expansion` (1 and 4). ResNet-50 is "v1.5": the stride of a
// downsampling bottleneck sits on its 3x3 conv2, not on the 1x1 conv1, as in
// torchvision (slightly more accurate, slightly slower).
//
// Names and order are torchvision's state_dict keys: conv1, bn1, layer1..4
// with blocks `layerS.B.{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample.0,downsample.1]}`, fc.

public enum Arch: String, Codable, CaseIterable, Sendable {
    case resnet18, resnet34, resnet50

    public var layerBlockSizes: [Int] {
        switch self {
        case .resnet18: return [2, 2, 2, 2]
        case .resnet34, .resnet50: return [3, 4, 6, 3]
        }
    }
    public var usesBasicBlocks: Bool { self != .resnet50 }
    public var expansion: Int { usesBasicBlocks ? 1 : 4 }
}

public struct ResNetConfig: Codable, Sendable, Equatable {
    public var arch: Arch
    public var inChannels: Int
    public var numClasses: Int
    /// Channels of the stem and layer1 (torchvision: 64); smaller for tests.
    public var width: Int
    /// Zero-init the last BN of each residual branch, so every block starts
    /// as the identity (Goyal et al. 2017); torchvision's `zero_init_residual`.
    public var zeroInitResidual: Bool

    public init(arch: Arch = .resnet18, inChannels: Int = 1, numClasses: Int = 2, width: Int = 64,
                zeroInitResidual: Bool = false) {
        self.arch = arch; self.inChannels = inChannels; self.numClasses = numClasses
        self.width = width; self.zeroInitResidual = zeroInitResidual
    }
}

/// What the layers of one network share: the parameter buffer, the scratch space, the engine, the profiler.
struct Layers {
    let store: ParameterStore
    let ws: Workspace
    let engine: Engine
    let profiler: Profiler
}

/// A conv followed by its BN (ReLU fused into the BN when `relu`). `feedsConvolution`: the output's
/// only reader is the next convolution of a residual branch.
struct ConvBN {
    let conv: Conv2d
    let bn: BatchNorm2d
    let feedsConvolution: Bool
    init(_ l: Layers, conv cname: String, bn bname: String,
         C: Int, OC: Int, kernel: Int, stride: Int, pad: Int, relu: Bool, feedsConvolution: Bool = false) {
        conv = Conv2d(store: l.store, ws: l.ws, name: cname, C: C, OC: OC, kernel: kernel, stride: stride, pad: pad, engine: l.engine,
                      profiler: l.profiler)
        bn = BatchNorm2d(store: l.store, name: bname, C: OC, relu: relu, engine: l.engine)
        self.feedsConvolution = feedsConvolution
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
}

/// BasicBlock (two 3x3) or Bottleneck (1x1, 3x3, 1x1), with the optional
/// 1x1-conv + BN projection shortcut `downsample`.
public final class ResidualBlock {
    public let name: String
    let branch: [ConvBN]
    let downsample: ConvBN?
    let add: AddReLU
    let parallel: Parallel
    let profiler: Profiler
    /// dL/d(block output) seen by the last backward (for CAM capture).
    public private(set) var lastOutputGrad: Tensor?

    init(_ l: Layers, name: String, basic: Bool, inplanes: Int, planes: Int, stride: Int) {
        self.name = name
        add = AddReLU(engine: l.engine)
        parallel = l.engine.parallel
        profiler = l.profiler
        let p = name + "."
        let out = planes * (basic ? 1 : 4)
        if basic {
            branch = [
                ConvBN(l, conv: p + "conv1", bn: p + "bn1", C: inplanes, OC: planes, kernel: 3, stride: stride, pad: 1, relu: true,
                       feedsConvolution: true),
                ConvBN(l, conv: p + "conv2", bn: p + "bn2", C: planes, OC: planes, kernel: 3, stride: 1, pad: 1, relu: false),
            ]
        } else {
            branch = [
                ConvBN(l, conv: p + "conv1", bn: p + "bn1", C: inplanes, OC: planes, kernel: 1, stride: 1, pad: 0, relu: true,
                       feedsConvolution: true),
                ConvBN(l, conv: p + "conv2", bn: p + "bn2", C: planes, OC: planes, kernel: 3, stride: stride, pad: 1, relu: true,
                       feedsConvolution: true),
                ConvBN(l, conv: p + "conv3", bn: p + "bn3", C: planes, OC: out, kernel: 1, stride: 1, pad: 0, relu: false),
            ]
        }
        if stride != 1 || inplanes != out {
            downsample = ConvBN(l, conv: p + "downsample.0", bn: p + "downsample.1",
                                C: inplanes, OC: out, kernel: 1, stride: stride, pad: 0, relu: false)
        } else {
            downsample = nil
        }
    }

    public var output: Tensor { add.output }
    var batchNorms: [BatchNorm2d] { branch.map(\.bn) + (downsample.map { [$0.bn] } ?? []) }
    /// Where this block's parameters begin in the parameter buffer.
    var firstParameterOffset: Int { (convs.map(\.weight.offset) + batchNorms.flatMap { [$0.weight.offset, $0.bias.offset] }).min()! }
    var convs: [Conv2d] { branch.map(\.conv) + (downsample.map { [$0.conv] } ?? []) }

    func forward(_ x: Tensor) -> Tensor {
        var h = x
        for cb in branch { h = cb.forward(h) }
        let identity = downsample?.forward(x) ?? x
        return profiler.measure(.residual) { add.forward(h, identity) }
    }

    /// Returns dL/dx (a buffer owned by the first conv of the branch).
    func backward(_ dy: Tensor) -> Tensor {
        lastOutputGrad = dy
        profiler.measure(.residual) { add.backward(dy) }
        var d = add.dinput
        for cb in branch.reversed() { d = cb.backward(d, needInputGrad: true) }
        if let ds = downsample {
            let dd = ds.backward(add.dinput, needInputGrad: true)
            profiler.measure(.residual) { addInPlace(d, dd, parallel) }
        } else {
            profiler.measure(.residual) { addInPlace(d, add.dinput, parallel) }
        }
        return d
    }
}

public final class ResNet {
    public let config: ResNetConfig
    /// Backend, precision, threads: every layer's, fixed when the network is built.
    public let engine: Engine
    /// Time per kind of work when `engine.profiling` (bench --profile), shared by the layers.
    public let profiler: Profiler
    public let store = ParameterStore()
    public let workspace = Workspace()
    let stem: ConvBN
    let maxpool: MaxPool2d
    /// layers[s][b] is `layer{s+1}.{b}`.
    public let layers: [[ResidualBlock]]
    let avgpool = GlobalAvgPool()
    let fc: Linear
    /// Features entering fc.
    public let featureCount: Int
    public private(set) var training = true

    public init(_ config: ResNetConfig, engine: Engine = Engine()) {
        engine.requireSupported()
        self.config = config
        self.engine = engine
        profiler = Profiler(enabled: engine.profiling)
        let l = Layers(store: store, ws: workspace, engine: engine, profiler: profiler)
        let w = config.width
        stem = ConvBN(l, conv: "conv1", bn: "bn1", C: config.inChannels, OC: w,
                      kernel: 7, stride: 2, pad: 3, relu: true)
        maxpool = MaxPool2d(kernel: 3, stride: 2, pad: 1, engine: engine)
        var inplanes = w
        var stages: [[ResidualBlock]] = []
        for (s, blocks) in config.arch.layerBlockSizes.enumerated() {
            let planes = w << s
            var stage: [ResidualBlock] = []
            for b in 0..<blocks {
                let blk = ResidualBlock(l, name: "layer\(s + 1).\(b)", basic: config.arch.usesBasicBlocks,
                                        inplanes: inplanes, planes: planes, stride: (b == 0 && s > 0) ? 2 : 1)
                inplanes = planes * config.arch.expansion
                stage.append(blk)
            }
            stages.append(stage)
        }
        layers = stages
        featureCount = inplanes
        fc = Linear(store: store, name: "fc", IN: inplanes, OUT: config.numClasses, engine: engine)
        store.seal()
    }

    var allBatchNorms: [(String, BatchNorm2d)] {
        var r: [(String, BatchNorm2d)] = [("bn1", stem.bn)]
        for stage in layers { for b in stage { for bn in b.batchNorms { r.append((b.name, bn)) } } }
        return r
    }
    var allConvs: [Conv2d] { [stem.conv] + layers.flatMap { $0.flatMap(\.convs) } }

    // MARK: initialisation

    /// torchvision's init: convs Kaiming normal (fan_out, ReLU gain), BN weight
    /// 1 bias 0, fc as nn.Linear (uniform +-1/sqrt(fan_in) for weight and bias).
    /// The same seed gives the same bits.
    public func initialize(seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        for conv in allConvs {
            let fanOut = conv.OC * conv.KH * conv.KW
            let std = (2.0 / Double(fanOut)).squareRoot()
            let p = store.values + conv.weight.offset
            for i in 0..<conv.weight.count { p[i] = Float(rng.normal() * std) }
        }
        for (_, bn) in allBatchNorms { bn.resetParameters() }
        if config.zeroInitResidual {
            for stage in layers { for b in stage { b.branch.last!.bn.resetParameters(zeroWeight: true) } }
        }
        let bound = 1 / Double(fc.IN).squareRoot()
        let wp = store.values + fc.weight.offset, bp = store.values + fc.bias.offset
        for i in 0..<fc.weight.count { wp[i] = Float(rng.uniform(-bound, bound)) }
        for i in 0..<fc.bias.count { bp[i] = Float(rng.uniform(-bound, bound)) }
    }

    // MARK: modes

    /// SyncBatchNorm: every BN layer sums its statistics over ranks with
    /// `reduce` (an in-place sum of Doubles); nil for per-rank statistics.
    public func synchroniseBatchNorm(_ reduce: ((UnsafeMutablePointer<Double>, Int) -> Void)?) {
        for (_, bn) in allBatchNorms { bn.statisticsReducer = reduce }
    }

    /// Train mode: BN uses batch statistics. Eval: running statistics.
    public func setTraining(_ on: Bool) {
        training = on
        for (_, bn) in allBatchNorms { bn.training = on }
    }

    /// Puts the BNs of the blocks whose name starts with one of `prefixes` in
    /// eval mode (frozen backbone in transfer learning); others follow `training`.
    public func freezeBatchNorm(prefixes: [String]) {
        for (owner, bn) in allBatchNorms {
            bn.training = training && !prefixes.contains(where: { owner.hasPrefix($0) || $0.isEmpty })
        }
    }

    // MARK: forward / backward

    /// x (N, inChannels, H, W) -> logits (N, numClasses).
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let s = stem.forward(x)
        var h = profiler.measure(.pool) { maxpool.forward(s) }
        for stage in layers { for b in stage { h = b.forward(h) } }
        let pooled = profiler.measure(.pool) { avgpool.forward(h) }
        return profiler.measure(.other) { fc.forward(pooled) }
    }

    /// Continues a forward from the output of the named block (`layerS` or
    /// `layerS.B`), given as `activation`, through the later blocks and the
    /// head: the rest of the network, for interventions (AblationCAM).
    public func forwardRest(after name: String, activation: Tensor) -> Tensor {
        var found = false
        var h = activation
        if engine.channelsLast && !activation.channelsLast {
            // The blocks' residual adds meet their convolutions' channels-last outputs.
            let t = nchwView("forwardRest")
            t.assign(activation, channelsLast: true, parallel: engine.parallel)
            h = t
        }
        for (s, stage) in layers.enumerated() {
            for b in stage {
                if found { h = b.forward(h) }
                if b.name == name || (b === stage.last && name == "layer\(s + 1)") { found = true }
            }
        }
        precondition(found, "no block named \(name)")
        return fc.forward(avgpool.forward(h))
    }

    /// Backward from dL/dlogits; accumulates every parameter gradient.
    /// `needInputGrad` also computes dL/dx into `inputGradient`.
    public func backward(_ dlogits: Tensor, needInputGrad: Bool = false) {
        profiler.measure(.other) { fc.backward(dlogits) }
        onGradientsFinal?(min(fc.weight.offset, fc.bias.offset))
        profiler.measure(.pool) { avgpool.backward(fc.dinput) }
        var d = avgpool.dinput
        for stage in layers.reversed() {
            for b in stage.reversed() {
                d = b.backward(d)
                onGradientsFinal?(b.firstParameterOffset)
            }
        }
        let dm = d
        profiler.measure(.pool) { maxpool.backward(dm) }
        _ = stem.backward(maxpool.dinput, needInputGrad: needInputGrad)
        onGradientsFinal?(0)
    }

    /// Called during `backward` each time the gradients of a trailing part of
    /// the parameter buffer are final: every gradient from `offset` to the
    /// end. Parameters lie in forward (state_dict) order and backward runs in
    /// reverse, so the final part grows from the end: after fc, after each
    /// block, after the stem. A data-parallel trainer starts the all-reduce of
    /// each gradient bucket here, while backward goes on (DDP, Horovod).
    public var onGradientsFinal: ((Int) -> Void)?

    /// dL/dx from the last `backward(_:needInputGrad: true)`.
    public var inputGradient: Tensor { stem.conv.dinput }

    /// The logits of the last forward.
    public var logits: Tensor { fc.output }

    // MARK: capture (for CAMs)

    /// Names that `activation(named:)` and `gradient(named:)` know: `layerS`,
    /// `layerS.B` (block outputs) and `maxpool`.
    public var capturableLayers: [String] {
        ["maxpool"] + layers.enumerated().flatMap { s, st in ["layer\(s + 1)"] + st.map(\.name) }
    }

    private func block(named name: String) -> ResidualBlock? {
        for (s, stage) in layers.enumerated() {
            if name == "layer\(s + 1)" { return stage.last }
            if let b = stage.first(where: { $0.name == name }) { return b }
        }
        return nil
    }

    /// The output of a named layer in the last forward (N, C, h, w), NCHW.
    public func activation(named name: String) -> Tensor? {
        let t = name == "maxpool" ? maxpool.output : block(named: name)?.output
        return t.map { nchw($0, name) }
    }

    /// dL/d(output of the named layer) from the last backward, NCHW.
    public func gradient(named name: String) -> Tensor? {
        // dL/d(maxpool output) is layer1.0's input gradient, which its backward
        // leaves in its first conv's dinput (after adding the shortcut's share).
        let t = name == "maxpool" ? (layers[0][0].lastOutputGrad == nil ? nil : layers[0][0].branch[0].conv.dinput)
            : block(named: name)?.lastOutputGrad
        return t.map { nchw($0, "d" + name) }
    }

    /// `t` itself when NCHW, else its NCHW copy in a buffer kept per `key` (valid until the next call for `key`).
    private func nchw(_ t: Tensor, _ key: String) -> Tensor {
        guard t.channelsLast else { return t }
        let view = nchwView(key)
        view.assign(t, channelsLast: false, parallel: engine.parallel)
        return view
    }

    private var views: [String: Tensor] = [:]
    private func nchwView(_ key: String) -> Tensor {
        if let v = views[key] { return v }
        let v = Tensor()
        views[key] = v
        return v
    }
}
