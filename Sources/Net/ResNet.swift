// ResNet-18/34/50 (He et al. 2016) with torchvision's structure and names.
//
// One type, configured by a value (as swift-models' ResNet): `Arch` carries
// the blocks per stage and the block kind (ResidualBlock.basic or
// .bottleneck, expansion 1 and 4). The network is its list of blocks, in
// forward order: the stem, the residual blocks stage by stage, the head
// (Block.swift); forward, backward, initialisation and the inference graph
// walk it, so the export cannot disagree with the forward.
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

public final class ResNet {
    public let config: ResNetConfig
    /// Backend, precision, threads: every layer's, fixed when the network is built.
    public let engine: Engine
    /// Time per kind of work when `engine.profiling` (bench --profile), shared by the layers.
    public let profiler: Profiler
    public let store = ParameterStore()
    public let workspace = Workspace()
    let stem: Stem
    /// layers[s][b] is `layer{s+1}.{b}`.
    public let layers: [[ResidualBlock]]
    let head: Head
    /// The network: stem, layer1.0 ... layer4.last, head, in forward (and state_dict) order.
    let blocks: [any Block]
    /// Features entering fc.
    public let featureCount: Int
    public private(set) var training = true

    public init(_ config: ResNetConfig, engine: Engine = Engine()) {
        engine.requireSupported()
        self.config = config
        self.engine = engine
        profiler = Profiler(enabled: engine.profiling)
        let l = Layers(store: store, ws: workspace, engine: engine, profiler: profiler)
        // The list. Blocks declare their parameters as they are built, so this order is the state_dict's.
        let w = config.width
        stem = Stem(l, inChannels: config.inChannels, width: w)
        let residualBlock = config.arch.usesBasicBlocks ? ResidualBlock.basic : ResidualBlock.bottleneck
        var inplanes = w
        var stages: [[ResidualBlock]] = []
        for (s, count) in config.arch.layerBlockSizes.enumerated() {
            let planes = w << s
            var stage: [ResidualBlock] = []
            for b in 0..<count {
                stage.append(residualBlock(l, "layer\(s + 1).\(b)", inplanes, planes, (b == 0 && s > 0) ? 2 : 1, config.zeroInitResidual))
                inplanes = planes * config.arch.expansion
            }
            stages.append(stage)
        }
        layers = stages
        featureCount = inplanes
        head = Head(l, features: inplanes, classes: config.numClasses)
        blocks = [stem] + stages.flatMap { $0 } + [head]
        store.seal()
    }

    var allBatchNorms: [BatchNorm2d] { blocks.flatMap(\.batchNorms) }

    // MARK: initialisation

    /// torchvision's init: convs Kaiming normal (fan_out, ReLU gain), BN weight
    /// 1 bias 0 (the last of each residual branch 0 with `zeroInitResidual`), fc
    /// as nn.Linear (uniform +-1/sqrt(fan_in) for weight and bias), each block in
    /// turn from one generator. The same seed gives the same bits.
    public func initialize(seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        for b in blocks { b.initialize(&rng) }
    }

    // MARK: modes

    /// SyncBatchNorm: every BN layer sums its statistics over ranks with
    /// `reduce` (an in-place sum of Doubles); nil for per-rank statistics.
    public func synchroniseBatchNorm(_ reduce: ((UnsafeMutablePointer<Double>, Int) -> Void)?) {
        for bn in allBatchNorms { bn.statisticsReducer = reduce }
    }

    /// Train mode: BN uses batch statistics. Eval: running statistics.
    public func setTraining(_ on: Bool) {
        training = on
        for bn in allBatchNorms { bn.training = on }
    }

    /// Puts the BNs whose state_dict names start with one of `prefixes` ("" matches
    /// all) in eval mode (frozen backbone in transfer learning), the BNs whose
    /// parameters `store.setFrozen(true, prefixes:)` freezes; others follow `training`.
    public func freezeBatchNorm(prefixes: [String]) {
        for bn in allBatchNorms {
            let name = store.entries[bn.weight.entry].name
            bn.training = training && !prefixes.contains(where: { name.hasPrefix($0) })
        }
    }

    // MARK: forward / backward

    /// x (N, inChannels, H, W) -> logits (N, numClasses).
    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        var h = x
        for b in blocks { h = b.forward(h) }
        return h
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
        return head.forward(h)
    }

    /// Backward from dL/dlogits; accumulates every parameter gradient.
    /// `needInputGrad` also computes dL/dx into `inputGradient`.
    public func backward(_ dlogits: Tensor, needInputGrad: Bool = false) {
        var d = dlogits
        for (i, b) in blocks.enumerated().reversed() {
            d = b.backward(d, needInputGrad: i > 0 || needInputGrad)
            onGradientsFinal?(b.firstParameterOffset)
        }
    }

    /// Called during `backward` each time the gradients of a trailing part of
    /// the parameter buffer are final: every gradient from `offset` to the
    /// end. Parameters lie in forward (state_dict) order and backward runs in
    /// reverse, so the final part grows from the end: after the head, after
    /// each block, after the stem. A data-parallel trainer starts the
    /// all-reduce of each gradient bucket here, while backward goes on (DDP, Horovod).
    public var onGradientsFinal: ((Int) -> Void)?

    /// dL/dx from the last `backward(_:needInputGrad: true)`.
    public var inputGradient: Tensor { stem.inputGradient }

    /// The logits of the last forward.
    public var logits: Tensor { head.fc.output }

    // MARK: inference graph

    /// Writes the eval-mode forward (running BN statistics, folded into the
    /// convolutions) into `graph`, from the tensor named `input` (N, inChannels,
    /// H, W); returns the name of the logits (N, numClasses).
    public func emit(into graph: InferenceGraph, input: String) -> String {
        var h = input
        for b in blocks { h = b.emit(into: graph, h) }
        return h
    }

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
        let t = name == "maxpool" ? stem.output : block(named: name)?.output
        return t.map { nchw($0, name) }
    }

    /// dL/d(output of the named layer) from the last backward, NCHW.
    public func gradient(named name: String) -> Tensor? {
        let t = name == "maxpool" ? stem.lastOutputGrad : block(named: name)?.lastOutputGrad
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
