import ArgumentParser

extension TestTimeAugmentation: ExpressibleByArgument {}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Metrics of a run's best checkpoint on its test (and val) split, and every figure; sharded under mpirun.",
        discussion: """
        Writes RUN/report/: index.html, summary.json, curves, ROC, conv1 kernels, input gradients, CAM grids. With --data SET: \
        the checkpoint on another data set instead, prepared with the run's image size, channels, normalisation and HU window, \
        into RUN/external/NAME/: predictions.csv (split 'external'), summary.json, ROC, reliability, confusion, CAM grid, \
        index.html, and localization.csv where SET's CSV has infection_mask/classes_mask columns. SET is a folder of class \
        folders (SET/<class>/*.png|jpg, the run's class names), a folder with one filename,label CSV or that CSV, or a \
        DICOM/NIfTI study with labels; a set of one class reports sensitivity or specificity only. One process (under mpirun, \
        rank 0 alone).
        """)

    @Argument(help: "The run folder.") var runDir: String
    @OptionGroup var explain: CAMOptions
    @Option(help: "Layer the CAMs explain: layer1...layer4 or a block such as layer4.1.") var layer: String = "layer4"
    @Option(help: "Test-time augmentation reported beside the plain figures: none or flip (mean with the mirror image).")
    var tta: TestTimeAugmentation = .none
    @OptionGroup var threading: ThreadOptions
    @Option(help: """
        Another data set to evaluate on (external validation): a folder of class folders, a folder with one filename,label \
        CSV (or the CSV; masks in infection_mask/classes_mask columns), or a DICOM/NIfTI study with labels.
        """)
    var data: String?
    @Option(help: "With --data: results go to RUN/external/NAME/ (default: the set's folder name; no '/' or '..').")
    var name: String?
    @OptionGroup var limits: ImageLimitOptions

    func validate() throws {
        if let n = name {
            guard data != nil else { throw ValidationError("--name names the results of --data; give --data SET") }
            if let problem = ExternalStage.nameProblem(n) { throw ValidationError(problem) }
        }
        if data != nil && tta != .none { throw ValidationError("--tta is for the run's own splits; --data evaluates without it") }
    }

    func run() throws {
        let kinds = try explain.kinds()
        try withCommunicator(threads: threading) { comm in
            var cfg = try TrainConfig.load(runDir + "/config.json")
            cfg.run = runDir
            if let set = data {
                // One process does it all; other ranks of an mpirun have nothing to wait for.
                guard comm.isRoot else { return }
                _ = try ExternalStage.run(config: cfg, set: set, name: name ?? ExternalStage.defaultName(for: set),
                                          checkpoint: "\(runDir)/ckpt/\(explain.checkpoint)", cams: kinds, layer: layer,
                                          settings: threading.settings, maxPixels: limits.maxPixels)
                return
            }
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
