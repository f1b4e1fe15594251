import Foundation
import Net

/// Sharded evaluation of a classifier on a split: position k goes to rank
/// k % size, and per-sample arrays are all-reduced, so every rank ends with
/// the same metrics. Used by the trainer (every epoch), `eval`, the report.
/// Probabilities and predicted classes are the `Classifier`'s.
public final class Evaluator {
    public let classifier: Classifier
    public var net: ResNet { classifier.net }
    public let dataset: Dataset
    public let batchMaker: BatchMaker
    let comm: Communicator
    let seed: UInt64
    /// The next batch is read, resized and normalised on another thread while this one runs forward.
    let batches = BatchPrefetcher()

    /// A split's metrics with every sample's label and class-1 score (for ROC curves).
    public struct Result: Sendable {
        public var metrics: SplitMetrics
        public var labels: [Int]
        public var scores: [Double]
    }

    public init(classifier: Classifier, dataset: Dataset, comm: Communicator, config: TrainConfig) {
        self.classifier = classifier; self.dataset = dataset; self.comm = comm
        batchMaker = classifier.batchMaker(for: dataset)
        seed = config.seed
    }

    /// Empty metrics when the data set has no such split. `tta` (nil: the
    /// classifier's, none) `.flip`: each image's probabilities are the mean of
    /// its own and its mirror's. An image with a non-finite probability scores
    /// NaN (`nonFiniteError` names it), on every rank alike, so a caller can
    /// refuse the run without a rank left waiting. `transform` changes each
    /// normalised batch in place before the forward (the lung occlusion).
    public func evaluate(_ split: Split, tta: TestTimeAugmentation? = nil, transform: ((Tensor) -> Void)? = nil) throws -> Result {
        let indices = dataset[split: split]
        guard !indices.isEmpty else { return Result(metrics: SplitMetrics(), labels: [], scores: []) }
        let n = indices.count, K = classifier.numClasses
        var scores = [Double](repeating: 0, count: n), preds = [Double](repeating: 0, count: n)
        var losses = [Double](repeating: 0, count: n)
        let mine = (0..<n).filter { $0 % comm.size == comm.rank }
        let chunks = stride(from: 0, to: mine.count, by: classifier.batchSize).map { Array(mine[$0..<min($0 + classifier.batchSize, mine.count)]) }
        let (maker, data, seed) = (batchMaker, dataset, self.seed)
        func prefetch(_ k: Int) {
            let files = chunks[k].map { indices[$0] }
            batches.start { try maker.batch(data, files, into: $0, seed: seed, augmentEpoch: nil, parallel: false) }
        }
        if !chunks.isEmpty { prefetch(0) }
        for (k, chunk) in chunks.enumerated() {
            let (x, labels) = try batches.take()
            if k + 1 < chunks.count { prefetch(k + 1) }
            transform?(x)
            let probs = classifier.probabilities(x, tta: tta)
            for (j, pos) in chunk.enumerated() {
                let p = probs[j]
                scores[pos] = Classifier.score(p)
                preds[pos] = Double(Classifier.decide(p))
                losses[pos] = -log(max(Double(p[labels[j]]), 1e-30))
            }
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

extension Evaluator {
    /// A run's classifier (its network freshly built on `engine`, not loaded), its data set and its batch maker
    /// (over the engine's threads). `engine` is in the run's precision (`EngineSettings.engine`).
    public convenience init(config: TrainConfig, comm: Communicator, engine: Engine) throws {
        precondition(engine.precision == config.precision, "an evaluator in \(engine.precision) for a \(config.precision) run")
        let dataset = try Dataset(path: config.dataset)
        self.init(classifier: Classifier(net: ResNet(config.netConfig, engine: engine), config: config), dataset: dataset, comm: comm,
                  config: config)
    }
}
