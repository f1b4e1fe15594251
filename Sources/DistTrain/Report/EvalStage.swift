import Cams
import Foundation
import Net

/// The evaluation and explanation stage (`disttrain eval`, and the end of
/// `train`): metrics of a checkpoint on val and test (sharded, `Evaluator`),
/// then on rank 0 the figures (`ReportFigures`) and the page (`ReportPage`):
/// report/{*.png, cams/, summary.json, index.html}.
public enum EvalStage {
    public static let sampleSeed: UInt64 = 1234

    /// Test positions shown in every report of a data set: `perClass` of each
    /// class, chosen by a fixed seed (so two models are compared on the same slices).
    public static func fixedSample(_ ds: Dataset, perClass: Int = 3) -> [Int] {
        let test = ds[split: .test]
        var order = Array(test.indices)
        var rng = Xoshiro256(seed: sampleSeed)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var picked: [Int] = []
        for k in 0..<max(ds.classNames.count, 2) {
            picked += order.filter { ds.labels[test[$0]] == k }.prefix(perClass)
        }
        return picked
    }

    /// Loads the checkpoint (rank 0, then broadcast), evaluates on every rank,
    /// and (rank 0) writes the report.
    public static func run(config: TrainConfig, comm: Communicator, checkpoint: String, cams: [CAMKind] = CAMKind.allCases,
                           layer: String = "layer4", tta: TestTimeAugmentation = .none,
                           settings: EngineSettings = EngineSettings()) throws -> EvalSummary {
        // Every rank: the run's precision; rank 0, which alone reads the checkpoint (the run folder may be
        // on its node only), checks it against config.json before the network is built (a failure there
        // ends the job through MPI_Abort).
        let engine = try RunModel.engine(config, configPath: config.run + "/config.json", settings: settings)
        if comm.isRoot { try RunModel.check(checkpoint, config: config, configPath: config.run + "/config.json") }
        let evaluator = try Evaluator(config: config, comm: comm, engine: engine)
        if comm.isRoot { try Checkpoint.load(checkpoint, into: evaluator.net) }
        ReplicaSync.broadcastModel(evaluator.net, comm)
        if settings.fusedInference { evaluator.classifier.useFusedInference() }
        // Every rank holds every score after the all-reduce, so all of them refuse alike.
        func finite(_ r: Evaluator.Result, _ split: Split) throws -> Evaluator.Result {
            if let e = evaluator.nonFiniteError(r, split, checkpoint: checkpoint) { throw e }
            return r
        }
        let val = try finite(evaluator.evaluate(.val), .val)
        let test = try finite(evaluator.evaluate(.test), .test)
        var summary = EvalSummary(checkpoint: checkpoint, val: val.metrics, test: test.metrics)
        if tta != .none {
            let (v, t) = (try finite(evaluator.evaluate(.val, tta: tta), .val), try finite(evaluator.evaluate(.test, tta: tta), .test))
            let evidence = config.numClasses == 2 && !t.labels.isEmpty
                ? RunEvidence(testLabels: t.labels, testScores: t.scores, valLabels: v.labels, valScores: v.scores, seed: sampleSeed) : nil
            summary.tta = AugmentedEvaluation(method: tta, val: v.metrics, test: t.metrics, evidence: evidence)
        }
        if evaluator.dataset.channels == 1 && !test.labels.isEmpty {
            // Issue 27: the test split again with the outside of each slice's lungs occluded (LungEnergy.swift).
            let t0 = now(), dilation = LungOcclusion.dilation(size: config.imageSize), maker = evaluator.batchMaker
            let occluded = try finite(evaluator.evaluate(.test) {
                LungOcclusion.occludeOutsideLungs($0, mean: maker.mean, std: maker.std, dilation: dilation)
            }, .test)
            summary.lungs = LungReport(occlusion: LungOcclusion(dilation: dilation, plain: test.metrics, occluded: occluded.metrics),
                                       occlusionSeconds: now() - t0)
        }
        guard comm.isRoot else { return summary }
        let dir = config.run + "/report"
        try FileManager.default.createDirectory(atPath: dir + "/cams", withIntermediateDirectories: true)
        return try writeReport(config: config, evaluator: evaluator, dir: dir, summary: summary, val: val, test: test, cams: cams,
                               layer: layer)
    }

    static func writeReport(config cfg: TrainConfig, evaluator: Evaluator, dir: String, summary: EvalSummary, val: Evaluator.Result,
                            test: Evaluator.Result, cams: [CAMKind], layer: String) throws -> EvalSummary {
        let t0 = now()
        if cfg.numClasses == 2 {
            try writePredictions(cfg, evaluator.dataset, [("val", .val, val), ("test", .test, test)], to: dir + "/predictions.csv")
        }
        let rows = MetricsLog.load(dir: cfg.run, upTo: Int.max).rows
        try ReportFigures.kernels(evaluator.net, dir: dir)
        let explainer = try CAMExplainer(net: evaluator.net, layer: layer)
        let rowsHTML = try explanations(cfg, evaluator, explainer, test: test, cams: cams, dir: dir)
        var full = summary
        full.run = cfg.run; full.method = cfg.method.rawValue; full.arch = cfg.arch.rawValue; full.imageSize = cfg.imageSize
        full.bestEpoch = rows.min { $0.val.loss < $1.val.loss }?.epoch ?? 0
        full.epochs = rows.count
        full.wallSeconds = rows.reduce(0) { $0 + $1.seconds }
        full.imagesPerSecond = rows.isEmpty ? 0 : rows.reduce(0) { $0 + $1.imagesPerSecond } / Double(rows.count)
        full.peakRSSMiB = rows.map(\.peakRSSMiB).filter(\.isFinite).max()
        full.classNames = cfg.classNames
        full.camLayer = layer
        let localization = try localize(cfg, evaluator, explainer, test: test, cams: cams)
        full.localization = localization.isEmpty ? nil : localization
        if let lungs = summary.lungs { full.lungs = try lungEnergy(cfg, evaluator, explainer, cams: cams, report: lungs) }
        if cfg.numClasses == 2 && !test.labels.isEmpty {
            let evidence = RunEvidence(testLabels: test.labels, testScores: test.scores, valLabels: val.labels, valScores: val.scores,
                                       seed: sampleSeed)
            full.evidence = evidence
            let audit = try Audit.run(evaluator.dataset, threads: evaluator.net.engine.threads)
            let tests = audit.matches.filter { $0.split == .test }
            if tests.count == test.labels.count {
                full.clean = CleanSubset(audit: audit, labels: test.labels, scores: test.scores,
                                         nearestLabels: tests.map { evaluator.dataset.labels[$0.nearest] }, seed: sampleSeed)
            }
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try durableWrite(dir + "/summary.json", data: try enc.encode(full))
        let plots = ReportFigures.plots(rows, bestEpoch: full.bestEpoch ?? 0, labels: test.labels, scores: test.scores, test: full.test,
                                        classNames: cfg.classNames, evidence: full.evidence)
        for p in plots { try p.canvas.write("\(dir)/\(p.name).png") }
        try ReportPage.html(full, cams: cams, rows: rowsHTML, plots: plots)
            .write(toFile: dir + "/index.html", atomically: true, encoding: .utf8)
        // The figures in TensorBoard too, at the last epoch.
        let events = try EventWriter(dir: cfg.run)
        for name in ["cam-grid"] + plots.map(\.name) {
            try events.image("report/\(name)", png: "\(dir)/\(name).png", step: rows.count)
        }
        print(String(format: "report: %@/index.html (%.0f s)", dir, now() - t0))
        return full
    }

    /// report/predictions.csv: every image of `parts` (the splits val and test; `eval --data`: its
    /// one split, named 'external') with its label and the model's p of the last class (what `report` pairs two models on).
    static func writePredictions(_ cfg: TrainConfig, _ ds: Dataset, _ parts: [(name: String, split: Split, result: Evaluator.Result)],
                                 to path: String) throws {
        let names = try ds.filenames()
        var csv = CSV.row(["split", "index", "file", "label", "p_" + (cfg.classNames.last ?? "1").lowercased()])
        for (name, split, r) in parts {
            for (pos, i) in ds[split: split].enumerated() where pos < r.labels.count {
                let file = names.indices.contains(i) ? names[i] : ""
                // The file is always quoted (RFC 4180 allows it; CSV.field quotes only where it must):
                // the bytes eval wrote before, which docs/results reproduce and older `report`s read.
                let quoted = "\"" + file.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                csv += [name, "\(i)", quoted, "\(r.labels[pos])", String(format: "%.9g", r.scores[pos])]
                    .joined(separator: ",") + "\n"
            }
        }
        try durableWrite(path, data: Data(csv.utf8))
    }

    /// The fixed sample plus up to 2 slices this model gets wrong: every CAM and
    /// the input gradient as PNGs under cams/, the grid, and the page's rows.
    static func explanations(_ cfg: TrainConfig, _ evaluator: Evaluator, _ explainer: CAMExplainer, test: Evaluator.Result,
                             cams: [CAMKind], dir: String) throws -> [String] {
        let ds = evaluator.dataset, indices = ds[split: .test]
        var sample = fixedSample(ds)
        let wrong = indices.indices.filter { Classifier.decide(score: test.scores[$0]) != test.labels[$0] }.prefix(2)
        sample += wrong.filter { !sample.contains($0) }
        let S = cfg.imageSize, columns = ["input", "input-gradient"] + cams.map(\.rawValue)
        let filenames = ds.count > 0 ? try ds.filenames() : []
        func className(_ k: Int) -> String { cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)" }
        var rowsHTML: [String] = [], tiles: [[[UInt8]]] = [], rowLabels: [[String]] = []
        for pos in sample {
            let x = Tensor()
            let lab = try evaluator.batchMaker.batch(ds, [indices[pos]], into: x, seed: cfg.seed, augmentEpoch: nil)
            let cells = ReportFigures.explanationTiles(x: x, labels: lab, net: evaluator.net, explainer: explainer, cams: cams,
                                                       mean: Float(cfg.mean.first ?? 0), std: Float(cfg.std.first ?? 1))
            let name = "test-\(pos)"
            for (col, cell) in zip(columns, cells) {
                try RasterImage(width: S, height: S, channels: 3, pixels: cell).writePNG("\(dir)/cams/\(name)-\(col).png")
            }
            tiles.append(cells)
            let p = test.scores[pos]
            let predicted = Classifier.decide(score: p)
            let file = filenames.indices.contains(indices[pos]) ? filenames[indices[pos]] : name
            rowLabels.append([(file as NSString).lastPathComponent, "true: \(className(lab[0]))", "predicted: \(className(predicted))",
                              String(format: "p(%@) = %.3f", className(1), p)])
            rowsHTML.append(ReportPage.explanationRow(name: name, file: file,
                                                      truth: className(lab[0]), classLabel: className(1), probability: p,
                                                      correct: className(predicted) == className(lab[0]), columns: columns, size: S))
        }
        let gridColumns = ["input", "input grad"] + cams.map(\.rawValue)
        try ReportFigures.camGrid(tiles, rowLabels: rowLabels, columns: gridColumns, size: S, dir: dir)
        return rowsHTML
    }

    /// Test slices the lung figures are measured on: the fixed sample, this
    /// many per class (100 slices on the CT set), and ScoreCAM, 512 masked
    /// forwards a slice (18 s at 160 px on 2 busy cores), on the first
    /// `scoreCAMPerClass` of them (the slices of the page's explanations).
    static let lungSamplePerClass = 50, scoreCAMPerClass = 3

    /// Where the maps lie (issue 27): on the fixed sample of the test split,
    /// the share of each CAM's (the predicted class) and the input gradient's
    /// energy inside the slice's lung mask and in its bottom rows
    /// (LungEnergy), beside the occluded pass of `run`. The masks come
    /// from the network's input itself (the slice at the run's size).
    static func lungEnergy(_ cfg: TrainConfig, _ evaluator: Evaluator, _ explainer: CAMExplainer, cams: [CAMKind],
                           report: LungReport) throws -> LungReport {
        let t0 = now()
        let ds = evaluator.dataset, indices = ds[split: .test], maker = evaluator.batchMaker, S = cfg.imageSize, C = maker.outChannels
        let sample = fixedSample(ds, perClass: lungSamplePerClass), costly = Set(fixedSample(ds, perClass: scoreCAMPerClass))
        let dilation = report.occlusion?.dilation ?? LungOcclusion.dilation(size: S)
        var out = report, parts = [String: [LungEnergy]]()
        let gradientName = "input-gradient", x = Tensor()
        // Each batch's figures are kept, not its maps (100 slices x 10 methods of S x S floats).
        func add(_ name: String, count n: Int, _ batchMasks: [[Bool]], _ make: () -> [Float]) {
            let t = now(), m = make()
            var part = LungEnergy.score(method: name, maps: (0..<n).map { Array(m[($0 * S * S)..<(($0 + 1) * S * S)]) },
                                        masks: batchMasks, height: S)
            part.seconds = now() - t
            parts[name, default: []].append(part)
        }
        for start in stride(from: 0, to: sample.count, by: 16) {
            let chunk = Array(sample[start..<min(start + 16, sample.count)])
            let labels = try maker.batch(ds, chunk.map { indices[$0] }, into: x, seed: cfg.seed, augmentEpoch: nil)
            let lungs = chunk.indices.map { LungOcclusion.lungMask(x, image: $0, mean: maker.mean, std: maker.std) }
            out.emptyMasks += lungs.filter { !$0.contains(true) }.count
            let kept = lungs.map { LungMask.dilated($0, radius: dilation, width: S, height: S).filter { $0 }.count }
            out.keptArea += Double(kept.reduce(0, +)) / Double(S * S)
            add(gradientName, count: chunk.count, lungs) {
                let g = inputGradient(net: evaluator.net, x: x, labels: labels)
                return (0..<(chunk.count * S * S)).map { i in
                    let k = i / (S * S), p = i % (S * S)
                    return (0..<C).map { abs(g[(k * C + $0) * S * S + p]) }.max() ?? 0
                }
            }
            for kind in cams where kind != .scorecam {
                add(kind.rawValue, count: chunk.count, lungs) { explainer.explain(x, method: kind).maps }
            }
            let few = chunk.indices.filter { costly.contains(chunk[$0]) }
            if cams.contains(.scorecam) && !few.isEmpty {
                let sub = Tensor([few.count, C, S, S])
                for (j, k) in few.enumerated() { (sub.data + j * C * S * S).update(from: x.data + k * C * S * S, count: C * S * S) }
                add(CAMKind.scorecam.rawValue, count: few.count, few.map { lungs[$0] }) { explainer.explain(sub, method: .scorecam).maps }
            }
        }
        out.slices = sample.count
        out.keptArea /= Double(max(sample.count, 1))
        out.sample = "the fixed test sample (seed \(sampleSeed)), up to \(lungSamplePerClass) slices per class; scorecam on the first "
            + "\(scoreCAMPerClass) per class"
        out.energy = ([gradientName] + cams.map(\.rawValue)).compactMap { parts[$0].map(LungEnergy.pooled) }
        out.energySeconds = now() - t0
        return out
    }

    /// Localisation against lesion masks, where the data set has them (phantoms):
    /// up to 12 positive test slices, each method's map of class 1.
    static func localize(_ cfg: TrainConfig, _ evaluator: Evaluator, _ explainer: CAMExplainer, test: Evaluator.Result,
                         cams: [CAMKind]) throws -> [Localization] {
        let ds = evaluator.dataset, indices = ds[split: .test], S = cfg.imageSize
        guard let src = (try? ds.file.stringAttribute("source")) ?? nil, FileManager.default.fileExists(atPath: src + "/masks") else {
            return []
        }
        let names = try ds.filenames()
        var images: [Int] = [], masks: [[Bool]?] = []
        for pos in Array(indices.indices.filter { test.labels[$0] == 1 }.prefix(12)) {
            guard let m = try? RasterImage.read(src + "/masks/" + names[indices[pos]]).converted(channels: 1).resized(width: S, height: S)
            else { continue }
            images.append(indices[pos])
            masks.append(m.pixels.map { $0 > 127 })
        }
        guard !images.isEmpty else { return [] }
        return try Localization.measure(evaluator, explainer, images: images, lesions: [("lesion", masks)], cams: cams, seed: sampleSeed)
    }
}
