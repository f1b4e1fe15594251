import ArgumentParser
import Foundation
import Net

struct Smoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a ResNet to one synthetic batch and show the loss falling (a quick end-to-end check of the engine).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "Batch size.") var batchSize: Int = 8
    @Option(help: "Steps.") var steps: Int = 30
    @Option(help: "Optimizer: sgd or adamw.") var optimizer: OptimizerKind = .sgd
    @Option(help: "Learning rate.") var lr: Double = 0.05
    @Option(help: "Seed of the initialisation and the data.") var seed: UInt64 = 0

    func validate() throws {
        guard (2...65_536).contains(batchSize) else { throw ValidationError("--batch-size must be in 2...65536 (BatchNorm needs 2)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard lr.isFinite && lr > 0 else { throw ValidationError("--lr must be a positive number") }
    }

    func run() throws {
        threading.apply()
        let net = ResNet(model.config, engine: try threading.settings.engine(.fp32))
        net.initialize(seed: seed)
        let step = TrainStep(net: net, optimizer: Optimizer(OptimizerConfig(kind: optimizer), store: net.store), comm: SingleProcess())
        let (x, labels) = syntheticBatch(batch: batchSize, channels: model.channels, size: model.imageSize,
                                         classes: model.classes, seed: seed &+ 1)
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
