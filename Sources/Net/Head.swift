// The head: global average pool, then fc: (N, C, h, w) -> (N, C) -> logits (N, numClasses).
// Exported with the names readers look up: `pooled`, `features` (the embedding), `logits`.

final class Head: Block {
    let avgpool = GlobalAvgPool()
    let fc: Linear
    let profiler: Profiler

    init(_ l: Layers, features: Int, classes: Int) {
        fc = Linear(store: l.store, name: "fc", IN: features, OUT: classes, engine: l.engine)
        profiler = l.profiler
    }

    var batchNorms: [BatchNorm2d] { [] }
    var firstParameterOffset: Int { min(fc.weight.offset, fc.bias.offset) }

    func initialize(_ rng: inout Xoshiro256) { fc.initializeUniform(&rng) }

    func forward(_ x: Tensor) -> Tensor {
        let pooled = profiler.measure(.pool) { avgpool.forward(x) }
        return profiler.measure(.other) { fc.forward(pooled) }
    }

    func backward(_ dy: Tensor, needInputGrad: Bool) -> Tensor {
        profiler.measure(.other) { fc.backward(dy) }
        profiler.measure(.pool) { avgpool.backward(fc.dinput) }
        return avgpool.dinput
    }

    func emit(into graph: InferenceGraph, _ x: String) -> String {
        let features = graph.flatten(graph.globalAveragePool(x, named: "pooled"), named: "features")
        let weight = graph.constant("fc.weight", shape: [fc.OUT, fc.IN], fc.store.read(fc.weight))
        let bias = graph.constant("fc.bias", shape: [fc.OUT], fc.store.read(fc.bias))
        return graph.linear(features, weight: weight, bias: bias, named: "logits")
    }
}
