// Fully connected layer, PyTorch layout: x (N, IN), w (OUT, IN), b (OUT),
// y = x w^T + b (N, OUT).
// Backward: dw += dy^T x (OUT, IN), db += sum_n dy, dx = dy w (N, IN).

public final class Linear {
    public let IN, OUT: Int
    public let weight, bias: ParamRef
    unowned let store: ParameterStore
    /// Precision and threads of its GEMMs.
    public let engine: Engine
    public let output = Tensor()
    public let dinput = Tensor()
    private var input: Tensor?

    public init(store: ParameterStore, name: String, IN: Int, OUT: Int, engine: Engine = Engine()) {
        engine.requireSupported()
        self.IN = IN; self.OUT = OUT; self.store = store; self.engine = engine
        weight = store.declare(name + ".weight", [OUT, IN], .parameter)
        bias = store.declare(name + ".bias", [OUT], .parameter)
    }

    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        let N = x.shape[0]
        precondition(x.count == N * IN, "linear expects \(IN) features, got \(x.shape)")
        input = x
        output.resize([N, OUT])
        let w = store.values + weight.offset, b = store.values + bias.offset
        for n in 0..<N { (output.data + n * OUT).update(from: b, count: OUT) }
        engine.sgemm(transB: true, M: N, N: OUT, K: IN, A: x.data, lda: IN, B: w, ldb: IN, beta: 1, C: output.data, ldc: OUT)
        return output
    }

    public func backward(_ dy: Tensor, needInputGrad: Bool = true) {
        guard let x = input else { preconditionFailure("linear backward before forward") }
        let N = x.shape[0]
        if !store.isFrozen(weight) {
            let dw = store.grads + weight.offset, db = store.grads + bias.offset
            engine.sgemm(transA: true, M: OUT, N: IN, K: N, A: dy.data, lda: OUT, B: x.data, ldb: IN, beta: 1, C: dw, ldc: IN)
            for n in 0..<N { for o in 0..<OUT { db[o] += dy.data[n * OUT + o] } }
        }
        if needInputGrad {
            dinput.resize(x.shape)
            let w = store.values + weight.offset
            engine.sgemm(M: N, N: IN, K: OUT, A: dy.data, lda: OUT, B: w, ldb: IN, beta: 0, C: dinput.data, ldc: IN)
        }
    }
}
