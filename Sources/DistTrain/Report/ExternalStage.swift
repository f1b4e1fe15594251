import Cams
import Foundation
import Net

/// `disttrain eval RUN --data SET`: a run's checkpoint on another data set,
/// prepared with the run's own preprocessing (its image size, channels,
/// normalisation; the run's HU window for DICOM/NIfTI), into
/// RUN/external/NAME/: images.h5 (the prepared set, reused while SET is
/// unchanged), predictions.csv, summary.json, the ROC, reliability and
/// confusion figures, the CAM grid with cams/, localization.csv where the set
/// has lesion masks, and index.html. One process; the run's decision rule
/// (`Classifier`), intervals (`Stats`, `RunEvidence`) and figures (`ReportFigures`).
public enum ExternalStage {
    /// NAME by default: SET's folder name (the folder of a CSV given as SET).
    public static func defaultName(for set: String) -> String {
        var url = URL(fileURLWithPath: set).standardizedFileURL
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue { url.deleteLastPathComponent() }
        return url.lastPathComponent
    }

    /// Why `name` cannot name RUN/external/NAME (nil: it can): one folder, never a path out of it.
    public static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name != ".", !name.contains("/"), !name.contains("..") else {
            return "--name '\(DatasetSource.oneLine(name))' must be one folder name under RUN/external/, without '/' or '..'"
        }
        return nil
    }

    public static func run(config cfg: TrainConfig, set path: String, name: String, checkpoint: String, cams: [CAMKind] = CAMKind.allCases,
                           layer: String = "layer4", settings: EngineSettings = EngineSettings(),
                           maxPixels: Int = RasterImage.defaultMaxPixels) throws -> ExternalSummary {
        let t0 = now()
        if let problem = nameProblem(name) { throw RuntimeError(problem + " (give --name)") }
        guard cfg.numClasses == 2 else {
            throw RuntimeError("eval --data measures two-class runs; '\(cfg.run)/config.json' has \(cfg.numClasses) classes")
        }
        let classNames = cfg.classNames.count == 2 ? cfg.classNames : ["0", "1"]
        // DICOM/NIfTI slices take the run's window; a run trained on PNG/JPEG slices has none, and lung is prepare's default.
        let window = cfg.window.flatMap(Window.init(argument:)) ?? .lung
        let set = try ExternalSet.open(path, classNames: classNames, window: window, maxPixels: maxPixels)
        let dir = "\(cfg.run)/external/\(name)", S = cfg.imageSize, C = ExternalSet.channels(of: cfg)
        try FileManager.default.createDirectory(atPath: dir + "/cams", withIntermediateDirectories: true)
        let prepared = try set.prepare(out: dir + "/images.h5", size: S, channels: C, maxPixels: maxPixels) { done, total in
            if done % 500 == 0 || done == total { print("  prepared \(done)/\(total) images"); fflush(stdout) }
        }
        print("external set '\(name)': \(set.samples.count) images (\(set.form.rawValue)) from \(path) at \(S)x\(S)"
              + (prepared.reused ? ", prepared before (\(prepared.path))" : " into \(prepared.path)"))
        let classifier = try Classifier.load(checkpoint, config: cfg, configPath: cfg.run + "/config.json", settings: settings)
        let evaluator = Evaluator(classifier: classifier, dataset: try Dataset(path: prepared.path), comm: SingleProcess(), config: cfg)
        let result = try evaluator.evaluate(.test)
        if let e = evaluator.nonFiniteError(result, .test, checkpoint: checkpoint) { throw e }
        let (labels, scores) = (result.labels, result.scores)
        try EvalStage.writePredictions(cfg, evaluator.dataset, [("external", .test, result)], to: dir + "/predictions.csv")

        let oneClass = OneClassFigure(labels: labels, scores: scores, classNames: classNames)
        let evidence = oneClass == nil
            ? RunEvidence(testLabels: labels, testScores: scores, valLabels: [], valScores: [], seed: EvalStage.sampleSeed) : nil
        let bins = Calibration.bins(labels: labels, scores: scores)
        let ece = Calibration.expectedCalibrationError(labels: labels, scores: scores)
        let plots = ReportFigures.outcomes(labels: labels, scores: scores, metrics: result.metrics, classNames: classNames,
                                           reliability: (bins, ece), split: "external")
        for p in plots { try p.canvas.write("\(dir)/\(p.name).png") }
        let explainer = try CAMExplainer(net: classifier.net, layer: layer)
        let rows = try EvalStage.explanations(cfg, evaluator, explainer, test: result, cams: cams, dir: dir)
        let localization = try localize(set, evaluator, explainer, cams: cams, size: S, maxPixels: maxPixels)
        if let l = localization { try writeLocalization(l, to: dir + "/localization.csv") }

        var note = oneClass?.sentence ?? "both classes: figures with 95 % stratified-bootstrap intervals of the images "
            + "(\(RunEvidence.defaultResamples) resamples) and the exact interval of accuracy; no temperature is fitted (no validation split)"
        if set.form == .medical && cfg.window == nil {
            note += "; the run has no HU window (trained on PNG/JPEG slices): the DICOM/NIfTI slices were windowed with \(window)"
        }
        let summary = ExternalSummary(run: cfg.run, checkpoint: checkpoint, name: name, set: path, form: set.form, imageSize: S, channels: C,
                                      window: set.form == .medical ? window.argument : nil, classNames: classNames,
                                      classCounts: classNames.indices.map { k in labels.filter { $0 == k }.count },
                                      metrics: result.metrics, evidence: evidence, oneClass: oneClass, ece: ece, reliability: bins,
                                      localization: localization, camLayer: layer, note: note, seconds: now() - t0)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try durableWrite(dir + "/summary.json", data: try enc.encode(summary))
        try durableWrite(dir + "/index.html", data: Data(ExternalPage.html(summary, cams: cams, rows: rows, plots: plots).utf8))
        for line in lines(summary) { print(line) }
        print(String(format: "external report: %@/index.html (%.0f s)", dir, summary.seconds))
        return summary
    }

    /// Every CAM method and the input gradient against the set's lesion masks (class 1's maps), over
    /// the slices that have masks; nil when none has.
    static func localize(_ set: ExternalSet, _ evaluator: Evaluator, _ explainer: CAMExplainer, cams: [CAMKind], size: Int,
                         maxPixels: Int) throws -> [Localization]? {
        let slices = set.masks.indices.filter { !set.masks[$0].isEmpty }
        guard !slices.isEmpty else { return nil }
        let t0 = now()
        let perSlice = try slices.map { try set.lesionMasks($0, size: size, maxPixels: maxPixels) }
        let kinds = ["lesion", "ground-glass", "consolidation"].filter { k in perSlice.contains { $0[k] != nil } }
        // The prepared set holds the samples in listing order: sample k is image k.
        let l = try Localization.measure(evaluator, explainer, images: slices, lesions: kinds.map { k in (k, perSlice.map { $0[k] }) },
                                         cams: cams, lungField: true, seed: EvalStage.sampleSeed)
        print(String(format: "localisation: %d slices with masks, %d maps each (%.0f s)", slices.count, cams.count + 1, now() - t0))
        return l
    }

    /// localization.csv: a row per method and kind of lesion, each figure with its 95 % interval.
    static func writeLocalization(_ rows: [Localization], to path: String) throws {
        func g(_ v: Double?) -> String { v.map { $0.isFinite ? String(format: "%.6g", $0) : "nan" } ?? "nan" }
        var csv = CSV.row(["method", "lesion", "region", "slices"] + Localization.figureNames.flatMap { [$0, $0 + "_lo", $0 + "_hi"] })
        for r in rows {
            let values = ["energy_inside": r.energyInside, "area_share": r.chance, "ratio": r.ratio ?? .nan, "pointing_game": r.pointingGame,
                          "pixel_auc": r.pixelAUC ?? .nan]
            csv += CSV.row([r.method, r.lesion ?? "lesion", r.region ?? "image", "\(r.images)"]
                           + Localization.figureNames.flatMap { n in [g(values[n]), g(r.intervals?[n]?.lower), g(r.intervals?[n]?.upper)] })
        }
        try durableWrite(path, data: Data(csv.utf8))
    }

    /// What stdout says of a summary: the figures the set allows, then the localisation of any lesion.
    public static func lines(_ s: ExternalSummary) -> [String] {
        let m = s.metrics
        guard s.oneClass == nil else { return ["external: " + s.note] + localisationLines(s) }
        var out = [String(format: "external (%d images): accuracy %.4f  sensitivity %.4f  specificity %.4f  AUC %.4f  ECE %.4f",
                          m.count, m.accuracy, m.sensitivity, m.specificity, m.auc, s.ece)]
        if let e = s.evidence {
            out += ["accuracy", "sensitivity", "specificity", "auc"].compactMap { name in
                e.intervals[name].map { String(format: "  %@ 95 %% interval %.4f to %.4f", name, $0.lower, $0.upper) }
            }
        }
        return out + ["  " + s.note] + localisationLines(s)
    }

    static func localisationLines(_ s: ExternalSummary) -> [String] {
        (s.localization ?? []).filter { ($0.lesion ?? "lesion") == "lesion" && $0.images > 0 }.map { l in
            String(format: "  %@%@: energy inside %.3f (area share %.3f, ratio %.2f), pointing game %.3f, pixel AUC %.3f (%d slices)",
                   l.method, l.region.map { " within the \($0)" } ?? "", l.energyInside, l.chance, l.ratio ?? .nan, l.pointingGame,
                   l.pixelAUC ?? .nan, l.images)
        }
    }
}
