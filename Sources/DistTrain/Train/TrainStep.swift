import Net

/// One data-parallel training step, the only one: `train`, `bench` and `smoke`
/// all call it, so the benchmark measures what training does. As llm.c's
/// `zero_grad; forward; backward; update`, with the gradient all-reduce
/// (Horovod's average over ranks) between backward and update.
public final class TrainStep {
    public let net: ResNet
    public let optimizer: Optimizer
    public let comm: Communicator
    public var loss: CrossEntropy
    public let allreduce: GradientAllreduce
    let dlogits = Tensor()

    /// Global figures of one step (summed over ranks).
    public struct Result: Sendable {
        /// Sum over the global batch of the per-sample loss.
        public var lossSum: Double
        public var correct: Double
        public var count: Double
        /// Seconds of gradient all-reduce after backward, i.e. not hidden behind
        /// it (includes waiting for the slowest rank).
        public var allreduceSeconds: Double
        public var meanLoss: Double { lossSum / count }
    }

    public init(net: ResNet, optimizer: Optimizer, comm: Communicator, loss: CrossEntropy = CrossEntropy(),
                allreduce mode: AllreduceMode = .overlapped, bucketMiB: Double = 25) {
        self.net = net; self.optimizer = optimizer; self.comm = comm; self.loss = loss
        let reducer = GradientAllreduce(comm: comm, store: net.store, mode: mode, bucketElements: Int(bucketMiB * 1024 * 1024 / 4))
        allreduce = reducer
        net.onGradientsFinal = mode == .overlapped && comm.size > 1 ? { reducer.gradientsFinal(from: $0) } : nil
    }

    /// x: (local batch, C, H, W) and its labels on this rank. `check` sees the
    /// global result before the update and may stop it by throwing (a NaN loss
    /// must not reach the weights).
    @discardableResult
    public func callAsFunction(_ x: Tensor, labels: [Int], lr: Double,
                               check: (Result) throws -> Void = { _ in }) rethrows -> Result {
        let s = net.store
        s.zeroGrads()
        let logits = net.forward(x)
        let l = loss.forwardBackward(logits: logits, labels: labels, dlogits: dlogits)
        net.backward(dlogits)
        let t0 = now()
        allreduce.finish()
        let reduce = now() - t0
        var stats = [Double(l) * Double(labels.count), Double(countCorrect(logits, labels)), Double(labels.count)]
        comm.allreduceSum(&stats)
        let result = Result(lossSum: stats[0], correct: stats[1], count: stats[2], allreduceSeconds: reduce)
        try check(result)
        optimizer.step(lr: lr)
        return result
    }

    /// Samples whose largest logit is their label's.
    func countCorrect(_ logits: Tensor, _ labels: [Int]) -> Int {
        let K = logits.shape[1]
        var c = 0
        for (n, y) in labels.enumerated() {
            var best = 0
            for k in 1..<K where logits[n * K + k] > logits[n * K + best] { best = k }
            if best == y { c += 1 }
        }
        return c
    }
}
