import ArgumentParser
import Foundation
import Net

struct Smoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a ResNet to one synthetic batch and show the loss falling (a quick end-to-end check of the engine).")

    /// A small batch and a high rate, so that 30 steps show the loss falling.
    private static let defaults: TrainConfig = {
        var c = TrainConfig()
        c.batchSize = 8; c.lr = 0.05
        return c
    }()

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Batch size.") var batchSize: Int = defaults.batchSize
    @Option(help: "Steps.") var steps: Int = 30
    @Option(help: "Optimizer: \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var optimizer: OptimizerKind = defaults.optimizer
    @Option(help: "Learning rate.") var lr: Double = defaults.lr
    @Option(help: "Seed of the initialisation and the data.") var seed: UInt64 = defaults.seed

    /// The run smoke fits one batch of, checked by the rows `train` is checked by.
    var config: TrainConfig {
        var c = model.applied(to: Smoke.defaults)
        c.batchSize = batchSize; c.optimizer = optimizer; c.lr = lr; c.seed = seed
        return c
    }

    func validate() throws {
        if let first = config.problems(naming: ModelOptions.names).first { throw ValidationError(first) }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    }

    func run() throws {
        threading.apply()
        let net = ResNet(config.netConfig, engine: try threading.settings.engine(.fp32))
        net.initialize(seed: seed)
        let step = TrainStep(net: net, optimizer: Optimizer(OptimizerConfig(kind: optimizer), store: net.store), comm: SingleProcess())
        let (x, labels) = syntheticBatch(batch: batchSize, channels: model.inChannels, size: model.imageSize,
                                         classes: model.numClasses, seed: seed &+ 1)
        var first = 0.0, last = 0.0
        for s in 0..<steps {
            let t0 = now()
            let r = try step(x, labels: labels, lr: lr) { r in
                guard r.meanLoss.isFinite else { throw RuntimeError("loss is \(r.meanLoss) at step \(s + 1)") }
            }
            if s == 0 { first = r.meanLoss }
            last = r.meanLoss
            print(String(format: "step %3d/%d  loss %.4f  %.1f img/s", s + 1, steps, last, Double(batchSize) / (now() - t0)))
        }
        print(String(format: "loss %.4f -> %.4f", first, last))
        guard last < first else { throw RuntimeError("the loss did not fall (\(first) -> \(last))") }
    }
}
