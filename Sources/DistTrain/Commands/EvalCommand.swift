import ArgumentParser

extension TestTimeAugmentation: ExpressibleByArgument {}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Metrics of a run's best checkpoint on its test (and val) split, and every figure; sharded under mpirun.",
        discussion: "Writes RUN/report/: index.html, summary.json, curves, ROC, conv1 kernels, input gradients, CAM grids.")

    @Argument(help: "The run folder.") var runDir: String
    @OptionGroup var explain: CAMOptions
    @Option(help: "Layer the CAMs explain: layer1...layer4 or a block such as layer4.1.") var layer: String = "layer4"
    @Option(help: "Test-time augmentation reported beside the plain figures: none or flip (mean with the mirror image).")
    var tta: TestTimeAugmentation = .none
    @OptionGroup var threading: ThreadOptions

    func run() throws {
        let kinds = try explain.kinds()
        try withCommunicator(threads: threading) { comm in
            var cfg = try TrainConfig.load(runDir + "/config.json")
            cfg.run = runDir
            let summary = try EvalStage.run(config: cfg, comm: comm, checkpoint: "\(runDir)/ckpt/\(explain.checkpoint)",
                                            cams: kinds, layer: layer, tta: tta, settings: threading.settings)
            guard comm.isRoot else { return }
            for (name, m) in [("val", summary.val), ("test", summary.test)] where m.count > 0 {
                print(String(format: "%@ (%d images): loss %.4f  accuracy %.4f  sensitivity %.4f  specificity %.4f  "
                             + "precision %.4f  F1 %.4f  AUC %.4f",
                             name, m.count, m.loss, m.accuracy, m.sensitivity, m.specificity, m.precision, m.f1, m.auc))
            }
            print("  test confusion (rows true \(cfg.classNames), columns predicted): \(summary.test.confusion)")
            if let a = summary.tta {
                print(String(format: "test with --tta %@: loss %.4f  accuracy %.4f  AUC %.4f", a.method.rawValue, a.test.loss,
                             a.test.accuracy, a.test.auc))
            }
        }
    }
}
