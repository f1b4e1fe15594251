// A residual block: y = ReLU(branch(x) + shortcut(x)), the shortcut being x
// itself or the 1x1-conv + BN projection `downsample` when the shape changes.
// torchvision's BasicBlock (two 3x3, expansion 1) and Bottleneck (1x1, 3x3,
// 1x1 to 4x the planes) differ only by their branch, built by `basic` and
// `bottleneck`. Bottleneck is "v1.5": the stride of a downsampling block sits
// on its 3x3 conv2, not on the 1x1 conv1, as in torchvision (slightly more
// accurate, slightly slower). Names: `layerS.B.{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample.0,downsample.1]}`.

public final class ResidualBlock: Block {
    public let name: String
    /// Its parts in forward order (each ConvBN today; any block that keeps the shape's channels can join).
    let branch: [any Block]
    let downsample: ConvBN?
    let add: AddReLU
    let parallel: Parallel
    let profiler: Profiler
    /// Zero-init the branch's last BN (Goyal et al. 2017), so the block starts as the identity.
    let zeroInitResidual: Bool
    /// dL/d(block output) seen by the last backward (for CAM capture).
    public private(set) var lastOutputGrad: Tensor?

    init(_ l: Layers, name: String, branch: [any Block], downsample: ConvBN?, zeroInitResidual: Bool) {
        self.name = name
        self.branch = branch
        self.downsample = downsample
        self.zeroInitResidual = zeroInitResidual
        add = AddReLU(engine: l.engine)
        parallel = l.engine.parallel
        profiler = l.profiler
    }

    /// BasicBlock: 3x3 (with the block's stride) + 3x3, `planes` channels out.
    static func basic(_ l: Layers, name: String, inplanes: Int, planes: Int, stride: Int, zeroInitResidual: Bool) -> ResidualBlock {
        let p = name + "."
        let branch = [
            ConvBN(l, conv: p + "conv1", bn: p + "bn1", C: inplanes, OC: planes, kernel: 3, stride: stride, pad: 1, relu: true,
                   feedsConvolution: true),
            ConvBN(l, conv: p + "conv2", bn: p + "bn2", C: planes, OC: planes, kernel: 3, stride: 1, pad: 1, relu: false),
        ]
        return ResidualBlock(l, name: name, branch: branch, downsample: shortcut(l, p, inplanes, planes, stride),
                             zeroInitResidual: zeroInitResidual)
    }

    /// Bottleneck: 1x1 + 3x3 (with the block's stride) + 1x1, `4 * planes` channels out.
    static func bottleneck(_ l: Layers, name: String, inplanes: Int, planes: Int, stride: Int, zeroInitResidual: Bool) -> ResidualBlock {
        let p = name + "."
        let branch = [
            ConvBN(l, conv: p + "conv1", bn: p + "bn1", C: inplanes, OC: planes, kernel: 1, stride: 1, pad: 0, relu: true,
                   feedsConvolution: true),
            ConvBN(l, conv: p + "conv2", bn: p + "bn2", C: planes, OC: planes, kernel: 3, stride: stride, pad: 1, relu: true,
                   feedsConvolution: true),
            ConvBN(l, conv: p + "conv3", bn: p + "bn3", C: planes, OC: planes * 4, kernel: 1, stride: 1, pad: 0, relu: false),
        ]
        return ResidualBlock(l, name: name, branch: branch, downsample: shortcut(l, p, inplanes, planes * 4, stride),
                             zeroInitResidual: zeroInitResidual)
    }

    /// The projection shortcut, declared after the branch (torchvision's order), when stride or width change.
    private static func shortcut(_ l: Layers, _ p: String, _ inplanes: Int, _ out: Int, _ stride: Int) -> ConvBN? {
        guard stride != 1 || inplanes != out else { return nil }
        return ConvBN(l, conv: p + "downsample.0", bn: p + "downsample.1", C: inplanes, OC: out, kernel: 1, stride: stride, pad: 0,
                      relu: false)
    }

    public var output: Tensor { add.output }
    var parts: [any Block] { branch + (downsample.map { [$0] } ?? []) }
    var batchNorms: [BatchNorm2d] { parts.flatMap(\.batchNorms) }
    var firstParameterOffset: Int { parts.map(\.firstParameterOffset).min()! }

    func initialize(_ rng: inout Xoshiro256) {
        for part in parts { part.initialize(&rng) }
        if zeroInitResidual { branch.flatMap(\.batchNorms).last!.resetParameters(zeroWeight: true) }
    }

    func forward(_ x: Tensor) -> Tensor {
        var h = x
        for part in branch { h = part.forward(h) }
        let identity = downsample?.forward(x) ?? x
        return profiler.measure(.residual) { add.forward(h, identity) }
    }

    /// Returns dL/dx (a buffer owned by the first part of the branch).
    func backward(_ dy: Tensor, needInputGrad: Bool) -> Tensor {
        lastOutputGrad = dy
        profiler.measure(.residual) { add.backward(dy) }
        var d = add.dinput
        for part in branch.reversed() { d = part.backward(d, needInputGrad: true) }
        if let ds = downsample {
            let dd = ds.backward(add.dinput, needInputGrad: true)
            profiler.measure(.residual) { addInPlace(d, dd, parallel) }
        } else {
            profiler.measure(.residual) { addInPlace(d, add.dinput, parallel) }
        }
        return d
    }

    func emit(into graph: InferenceGraph, _ x: String) -> String {
        var h = x
        for part in branch { h = part.emit(into: graph, h) }
        let identity = downsample?.emit(into: graph, x) ?? x
        let sum = graph.add(h, identity, named: graph.uniqueName(name + ".add"))
        return graph.relu(sum, named: graph.uniqueName(name + ".relu"))
    }
}
