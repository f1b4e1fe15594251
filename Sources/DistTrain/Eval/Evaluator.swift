import Foundation
import Net

/// Sharded evaluation of a network on a split: position k goes to rank
/// k % size, and per-sample arrays are all-reduced, so every rank ends with
/// the same metrics. Used by the trainer (every epoch), `eval`, the report.
public final class Evaluator {
    public let net: ResNet
    public let dataset: Dataset
    public let batchMaker: BatchMaker
    let comm: Communicator
    let batchSize: Int, numClasses: Int, seed: UInt64
    let x = Tensor()

    /// A split's metrics with every sample's label and class-1 score (for ROC curves).
    public struct Result: Sendable {
        public var metrics: SplitMetrics
        public var labels: [Int]
        public var scores: [Double]
    }

    public init(net: ResNet, dataset: Dataset, batchMaker: BatchMaker, comm: Communicator, config: TrainConfig) {
        self.net = net; self.dataset = dataset; self.batchMaker = batchMaker; self.comm = comm
        batchSize = config.evalBatchSize; numClasses = config.numClasses; seed = config.seed
    }

    /// Empty metrics when the data set has no such split. `tta: .flip`: each
    /// image's probabilities are the mean of its own and its mirror's. An image
    /// with a non-finite probability scores NaN (`nonFiniteError` names it), on
    /// every rank alike, so a caller can refuse the run without a rank left waiting.
    public func evaluate(_ split: Split, tta: TestTimeAugmentation = .none) throws -> Result {
        let indices = dataset[split: split]
        guard !indices.isEmpty else { return Result(metrics: SplitMetrics(), labels: [], scores: []) }
        net.setTraining(false)
        defer { net.setTraining(true) }
        let n = indices.count, K = numClasses
        var scores = [Double](repeating: 0, count: n), preds = [Double](repeating: 0, count: n)
        var losses = [Double](repeating: 0, count: n)
        let mine = (0..<n).filter { $0 % comm.size == comm.rank }
        var start = 0
        while start < mine.count {
            let chunk = Array(mine[start..<min(start + batchSize, mine.count)])
            let labels = try batchMaker.batch(dataset, chunk.map { indices[$0] }, into: x, seed: seed, augmentEpoch: nil)
            let probs = tta.probabilities(net, x)
            for (j, pos) in chunk.enumerated() {
                let p = probs[j]
                scores[pos] = p.allSatisfy(\.isFinite) ? Double(K == 2 ? p[1] : p.max()!) : .nan
                preds[pos] = Double(p.indices.max { p[$0] < p[$1] }!)
                losses[pos] = -log(max(Double(p[labels[j]]), 1e-30))
            }
            start += chunk.count
        }
        comm.allreduceSum(&scores); comm.allreduceSum(&preds); comm.allreduceSum(&losses)
        let labels = indices.map { dataset.labels[$0] }
        let metrics = SplitMetrics(lossSum: losses.reduce(0, +), labels: labels, predictions: preds.map { Int($0) },
                                   scores: scores, classes: K)
        return Result(metrics: metrics, labels: labels, scores: scores)
    }

    /// The first image of `result` (on `split`) whose probabilities are not finite,
    /// as an error naming it and `checkpoint`; nil when every one is finite.
    public func nonFiniteError(_ result: Result, _ split: Split, checkpoint: String) -> RuntimeError? {
        guard let pos = result.scores.firstIndex(where: { !$0.isFinite }) else { return nil }
        let i = dataset[split: split][pos]
        let file = (try? dataset.filenames()).flatMap { $0.indices.contains(i) ? $0[i] : nil } ?? "#\(i)"
        let bad = result.scores.filter { !$0.isFinite }.count
        return RuntimeError("checkpoint '\(checkpoint)' gives non-finite probabilities on \(bad) \(split.rawValue) image(s), the first "
                            + "'\(file)' (index \(i)): its weights or config.json's mean/std overflow float32; nothing was written")
    }
}

/// Test-time augmentation (`--tta`): what an image's probabilities average over.
public enum TestTimeAugmentation: String, Codable, CaseIterable, Sendable {
    case none, flip

    /// Softmax probabilities of each image of x (N, C, H, W), averaged with its
    /// left-right mirror's for `.flip`.
    public func probabilities(_ net: ResNet, _ x: Tensor) -> [[Float]] {
        let plain = softmax(net.forward(x))
        guard self == .flip else { return plain }
        let mirror = Tensor(x.shape)
        let W = x.shape[3], rows = x.count / W
        for r in 0..<rows { for c in 0..<W { mirror.data[r * W + c] = x.data[r * W + W - 1 - c] } }
        let flipped = softmax(net.forward(mirror))
        return zip(plain, flipped).map { a, b in zip(a, b).map { ($0 + $1) / 2 } }
    }
}

extension Evaluator {
    /// A run's network (freshly built on `engine`, not loaded), its data set and its batch maker
    /// (over the engine's threads). `engine` is in the run's precision (`EngineSettings.engine`).
    public convenience init(config: TrainConfig, comm: Communicator, engine: Engine) throws {
        precondition(engine.precision == config.precision, "an evaluator in \(engine.precision) for a \(config.precision) run")
        let dataset = try Dataset(path: config.dataset)
        var maker = BatchMaker(dataset: dataset, config: config)
        maker.threads = engine.threads
        self.init(net: ResNet(config.netConfig, engine: engine), dataset: dataset, batchMaker: maker, comm: comm, config: config)
    }
}
