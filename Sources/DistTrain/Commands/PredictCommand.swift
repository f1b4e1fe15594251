import ArgumentParser
import Cams
import Foundation
import Net

/// `disttrain predict IMG... --run RUN --out DIR --cams all`.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Probability and CAM overlays for new images, with a run's best checkpoint.",
        discussion: """
        Writes DIR/predictions.csv (file, p_<positive class>, predicted class), DIR/cams.h5 (one float32 [N, H, W] dataset \
        per method, values in [0, 1], plus filenames) and one overlay PNG per image and method (named by the image, and by \
        its folders where two images share a name). DICOM files, DICOM series \
        folders and NIfTI volumes are read slice by slice in HU and windowed as the run's data set was (or --window); \
        DIR/series.csv then holds one row per series or volume: slices, mean and max probability.
        """)

    @Argument(help: "PNG or JPEG images, DICOM files, folders of a DICOM series, or NIfTI volumes (.nii, .nii.gz).")
    var images: [String]
    @Option(help: "HU window for DICOM/NIfTI: lung, mediastinum, W,L or file (default: the run's).") var window: Window?
    @Option(name: .customLong("run"), help: "Run folder.") var runDir: String
    @Option(help: "Output folder.") var out: String = "predictions"
    @OptionGroup var explain: CAMOptions
    @OptionGroup var limits: ImageLimitOptions
    @Option(help: "Test-time augmentation: none or flip (mean of the image's and its mirror's probabilities).")
    var tta: TestTimeAugmentation = .none
    @Option(help: "Images per forward pass (default: the run's evalBatchSize); 1 is one image at a time, as before; any size agrees to 1e-6.")
    var batchSize: Int?
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        if let b = batchSize, !(1...65_536).contains(b) { throw ValidationError("--batch-size must be in 1...65536") }
    }

    func run() throws {
        let kinds = try explain.kinds()
        _ = threading.apply()
        let configPath = runDir + "/config.json", checkpoint = "\(runDir)/ckpt/\(explain.checkpoint)"
        let cfg = try TrainConfig.load(configPath)
        guard !cfg.mean.isEmpty else { throw RuntimeError("'\(configPath)' has no input normalisation (mean, std)") }
        // In the run's precision (a bf16 run's probabilities and CAMs are eval's), the checkpoint checked before it is built.
        let classifier = try Classifier.load(checkpoint, config: cfg, configPath: configPath, settings: threading.settings, tta: tta,
                                             batchSize: batchSize)
        let S = cfg.imageSize
        let explainer = try CAMExplainer(net: classifier.net)
        let inputs = PredictInput.uniqueStems(try PredictInput.expand(images, window: window,
                                                                       runWindow: cfg.window.flatMap(Window.init(argument:)),
                                                                       maxPixels: limits.maxPixels))
        // Every probability first: a model that overflows on any input (3e38 weights) is refused before a file is written.
        let probabilities = classifier.probabilities(of: inputs.map(\.image))
        for (input, p) in zip(inputs, probabilities) {
            if let bad = p.first(where: { !$0.isFinite }) {
                throw RuntimeError("'\(input.name)': checkpoint '\(checkpoint)' gives a non-finite probability (\(bad.isNaN ? "NaN" : "\(bad)")): its weights "
                                   + "or the mean/std of '\(configPath)' overflow float32; nothing was written")
            }
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let positive = "p_" + (cfg.classNames.last ?? "1").lowercased()
        var csv = CSV.row(["file", positive, "predicted"])
        var maps = [String: [Float]](), perSeries: [(String, [Double])] = []
        func className(_ k: Int) -> String { cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)" }
        for (input, p) in zip(inputs, probabilities) {
            let pk = p.last ?? 0
            csv += CSV.row([input.name, String(format: "%.6f", pk), className(Classifier.decide(p))])
            if let series = input.series {
                if perSeries.last?.0 == series {
                    perSeries[perSeries.count - 1].1.append(Double(pk))
                } else {
                    perSeries.append((series, [Double(pk)]))
                }
            }
            guard !kinds.isEmpty else { continue }
            let img = classifier.input(input.image), x = classifier.tensor([img])
            let gray = img.pixels.map { Float($0) / 255 }
            for kind in kinds {
                let m = explainer.explain(x, method: kind).maps
                maps[kind.rawValue, default: []] += m
                try RasterImage(width: S, height: S, channels: 3, pixels: overlay(gray: gray, cam: m))
                    .writePNG("\(out)/\(input.stem)-\(kind.rawValue).png")
            }
        }
        if !perSeries.isEmpty {
            var rows = CSV.row(["series", "slices", "mean_" + positive, "max_p", "predicted_by_mean"])
            for (series, ps) in perSeries {
                let mean = ps.reduce(0, +) / Double(ps.count), mx = ps.max() ?? mean
                rows += CSV.row([series, "\(ps.count)", String(format: "%.6f", mean), String(format: "%.6f", mx),
                                 className(Classifier.decide(score: mean) == 1 ? cfg.classNames.count - 1 : 0)])
                print(String(format: "series %@: %d slices, mean p %.4f, max p %.4f", series, ps.count, mean, mx))
            }
            try durableWrite(out + "/series.csv", data: Data(rows.utf8))
        }
        try durableWrite(out + "/predictions.csv", data: Data(csv.utf8))
        try durableHDF5(out + "/cams.h5") { f in
            for (name, v) in maps { try f.write(name, shape: [inputs.count, S, S], floats: v) }
            try f.writeStrings("filenames", inputs.map(\.name))
        }
        print("wrote \(out)/predictions.csv\(perSeries.isEmpty ? "" : ", series.csv"), cams.h5 and \(inputs.count * kinds.count) overlays")
    }
}

/// One image predict works on: a PNG/JPEG, or one slice of a DICOM file,
/// series folder or NIfTI volume (windowed to 8 bits), with its series.
struct PredictInput {
    var name: String
    var image: RasterImage
    var series: String?

    /// The overlays' file-name stem: an image's name without extension; a
    /// slice's file (relative to the folder given, "/" as "_") and its frame.
    var stem: String

    /// `inputs` with overlay stems made unique: where two collide (a/x.png and
    /// b/x.png are both "x"), each gets as many of its parent folders as tell
    /// them apart ("a_x", "b_x"); any still alike (a path given twice, or x.png
    /// beside an a_x.png) get "~2", "~3" in input order.
    static func uniqueStems(_ inputs: [PredictInput]) -> [PredictInput] {
        var out = inputs
        for (_, group) in Dictionary(grouping: out.indices, by: { out[$0].stem }) where group.count > 1 {
            let folders = group.map { i in
                (out[i].name as NSString).deletingLastPathComponent.split(separator: "/").map(String.init).filter { $0 != "." }
            }
            let deepest = folders.map(\.count).max() ?? 0, distinct = Set(folders).count
            var k = 1
            while k < deepest && Set(folders.map { $0.suffix(k).joined(separator: "/") }).count < distinct { k += 1 }
            for (i, f) in zip(group, folders) where !f.isEmpty { out[i].stem = f.suffix(k).joined(separator: "_") + "_" + out[i].stem }
        }
        var seen = Set<String>()
        for i in out.indices {
            var s = out[i].stem, n = 1
            while seen.contains(s) { n += 1; s = out[i].stem + "~\(n)" }
            seen.insert(s)
            out[i].stem = s
        }
        return out
    }

    static func stem(_ file: String, frame: Int?) -> String {
        let base = file.hasSuffix(".nii.gz") ? String(file.dropLast(7)) : (file as NSString).deletingPathExtension
        return base.replacingOccurrences(of: "/", with: "_") + (frame.map { "-\($0)" } ?? "")
    }

    static func expand(_ paths: [String], window: Window?, runWindow: Window?, maxPixels: Int) throws -> [PredictInput] {
        var out: [PredictInput] = []
        func chosen(_ path: String) throws -> Window {
            guard let w = window ?? runWindow else {
                throw RuntimeError("'\(path)' is DICOM/NIfTI but the run was trained on PNG/JPEG: pass --window (lung, mediastinum, W,L, file)")
            }
            return w
        }
        for path in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw RuntimeError("'\(path)' does not exist") }
            // Before anything opens it: a FIFO (under any name) would block the open forever.
            if !isDir.boolValue, let problem = DatasetSource.regularFileProblem(path) { throw RuntimeError(problem) }
            if isDir.boolValue {
                // A folder: its series found, ordered and windowed as prepare does.
                let source = MedicalSource(dir: path, window: try chosen(path), maxPixels: maxPixels)
                let series = try source.series()
                guard !series.isEmpty else { throw RuntimeError("'\(path)' holds no DICOM file or NIfTI volume") }
                for s in series {
                    for slice in s.slices {
                        let sample = Sample(file: slice.file, label: 0, line: 0, frame: slice.frame)
                        out.append(PredictInput(name: path + "/" + sample.name, image: try source.image(sample),
                                                series: s.isVolume ? path + "/" + slice.file : s.key[.series],
                                                stem: stem((path as NSString).lastPathComponent + "/" + slice.file, frame: slice.frame)))
                    }
                }
            } else if NiftiVolume.isNIfTI(path) || DicomFile.looksLikeDICOM(path) {
                // One file: every frame or slice, in file order.
                let dir = (path as NSString).deletingLastPathComponent, file = (path as NSString).lastPathComponent
                let source = MedicalSource(dir: dir.isEmpty ? "." : dir, window: try chosen(path), maxPixels: maxPixels)
                let count: Int, series: String
                switch try MedicalCache.shared.load(source.dir + "/" + file, maxPixels: maxPixels) {  // the path source.image reads, so one decode
                case .dicom(let d): count = d.frames; series = d.seriesUID
                case .nifti(let v): count = v.sliceCount; series = path
                }
                for k in 0..<count {
                    let sample = Sample(file: file, label: 0, line: 0, frame: count > 1 || NiftiVolume.isNIfTI(path) ? k : nil)
                    out.append(PredictInput(name: (dir.isEmpty ? "" : dir + "/") + sample.name, image: try source.image(sample), series: series,
                                            stem: stem(file, frame: sample.frame)))
                }
            } else {
                out.append(PredictInput(name: path, image: try RasterImage.read(path, maxPixels: maxPixels), series: nil,
                                        stem: stem((path as NSString).lastPathComponent, frame: nil)))
            }
        }
        return out
    }
}
