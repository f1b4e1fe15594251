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
        DIR/series.csv then holds one row per series or volume: slices, mean and max probability. \
        With --dicom-out, each DICOM series also gets a Comprehensive SR document and an RGB Secondary Capture \
        overlay per slice (the first of --cams), both in the source study (README, Hospital use).
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
    @Option(help: "Compute in this precision instead of the run's: fp32, or bf16 (needs AVX512-BF16). Default: the run's.")
    var precision: Precision?
    @Option(help: ArgumentHelp("""
        For every DICOM series read: DIR/series-N/sr.dcm, a Comprehensive SR in the source study (series probability \
        = mean of its slices', the decision at p > 0.5 as a SNOMED CT finding, each slice's probability with its image, \
        the checkpoint's SHA-256, every source instance as evidence) and DIR/series-N/sc-K.dcm, an RGB Secondary \
        Capture of slice K's CAM overlay (the first of --cams; none with --cams none).
        """, valueName: "DIR"))
    var dicomOut: String?
    @Option(help: "Root of the UIDs --dicom-out writes (digits and dots, at most 24 characters; default: DCMTK's).")
    var uidRoot: String?

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        if let b = batchSize, !(1...65_536).contains(b) { throw ValidationError("--batch-size must be in 1...65536") }
        if let r = uidRoot {
            let parts = r.split(separator: ".", omittingEmptySubsequences: false)
            guard r.count <= 24, !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy({ ("0"..."9").contains($0) }) && ($0 == "0" || $0.first != "0") }) else {
                throw ValidationError("--uid-root '\(r)' must be digits and dots without leading zeros, at most 24 characters (e.g. 1.2.826.0.1.3680043.10.543)")
            }
            guard dicomOut != nil else { throw ValidationError("--uid-root needs --dicom-out") }
        }
    }

    func run() throws {
        let kinds = try explain.kinds()
        _ = threading.apply()
        let configPath = runDir + "/config.json", checkpoint = "\(runDir)/ckpt/\(explain.checkpoint)"
        var cfg = try TrainConfig.load(configPath)
        if let p = precision { cfg.precision = p }
        guard !cfg.mean.isEmpty else { throw RuntimeError("'\(configPath)' has no input normalisation (mean, std)") }
        // --dicom-out names the checkpoint by its SHA-256: hashed before it is loaded, and checked again before the results are written.
        let device = try dicomOut.map { _ in
            try DicomResultDevice(config: cfg, checkpoint: checkpoint, tta: tta, window: window?.argument, uidRoot: uidRoot)
        }
        // In the run's precision (a bf16 run's probabilities and CAMs are eval's) unless --precision says otherwise, the
        // checkpoint checked before it is built.
        let classifier = try Classifier.load(checkpoint, config: cfg, configPath: configPath, settings: threading.settings, tta: tta,
                                             batchSize: batchSize)
        let S = cfg.imageSize
        let explainer = try CAMExplainer(net: classifier.net)
        let inputs = PredictInput.uniqueStems(try PredictInput.expand(images, window: window,
                                                                       runWindow: cfg.window.flatMap(Window.init(argument:)),
                                                                       maxPixels: limits.maxPixels))
        let dicomSeries = dicomOut == nil ? [] : PredictInput.dicomSeries(inputs)
        if let d = dicomOut, dicomSeries.isEmpty {
            throw RuntimeError("--dicom-out '\(d)': none of the inputs is a DICOM file or series; nothing to report in DICOM")
        }
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
        var firstOverlay = [Int: RasterImage]()  // input index -> the first CAM's overlay, for --dicom-out
        func className(_ k: Int) -> String { cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)" }
        for (index, (input, p)) in zip(inputs, probabilities).enumerated() {
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
                // The class predictions.csv names (the fused forward's), not the plain forward's argmax, which may
                // differ by rounding near p = 0.5.
                let m = explainer.explain(x, method: kind, target: .classIndex(Classifier.decide(p))).maps
                maps[kind.rawValue, default: []] += m
                let rgb = RasterImage(width: S, height: S, channels: 3, pixels: overlay(gray: gray, cam: m))
                try rgb.writePNG("\(out)/\(input.stem)-\(kind.rawValue).png")
                if dicomOut != nil, kind == kinds[0], input.dicom != nil { firstOverlay[index] = rgb }
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
        if let d = dicomOut, let device {
            guard try DicomResults.sha256(file: checkpoint) == device.checkpointSHA256 else {
                throw RuntimeError("'\(checkpoint)' changed while predict read it (is the run still training?): no DICOM results written; run again")
            }
            // The same per-slice probabilities as predictions.csv, so each SR's series value is series.csv's mean.
            var files = 0
            for (n, members) in dicomSeries.enumerated() {
                let result = DicomSeriesResult(slices: members.compactMap { i in
                    inputs[i].dicom.map { DicomSeriesResult.Slice(path: $0.path, frame: $0.frame, probability: Double(probabilities[i].last ?? 0),
                                                                  overlay: firstOverlay[i]) }
                }, overlayMethod: kinds.first?.rawValue)
                files += try DicomResults.write(result, device: device, into: "\(d)/series-\(n + 1)").count
            }
            print("wrote \(d): \(dicomSeries.count) SR document(s) and \(files - dicomSeries.count) Secondary Capture image(s)"
                  + (kinds.isEmpty ? " (--cams none: no overlays)" : ""))
        }
    }
}

/// One image predict works on: a PNG/JPEG, or one slice of a DICOM file,
/// series folder or NIfTI volume (windowed to 8 bits), with its series.
struct PredictInput {
    var name: String
    var image: RasterImage
    var series: String?
    /// The DICOM file (and frame, 0-based, of a multi-frame file) the slice is, for --dicom-out; nil for other images.
    var dicom: (path: String, frame: Int?)?

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

    /// The DICOM inputs grouped by series as series.csv groups them (consecutive inputs
    /// of one series key), as indices into `inputs`.
    static func dicomSeries(_ inputs: [PredictInput]) -> [[Int]] {
        var out: [(key: String, members: [Int])] = []
        for (i, input) in inputs.enumerated() where input.dicom != nil {
            let key = input.series ?? input.name
            if out.last?.key == key && out.last?.members.last == i - 1 { out[out.count - 1].members.append(i) } else { out.append((key, [i])) }
        }
        return out.map(\.members)
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
                                                dicom: s.isVolume ? nil : (path + "/" + slice.file, slice.frame),
                                                stem: stem((path as NSString).lastPathComponent + "/" + slice.file, frame: slice.frame)))
                    }
                }
            } else if NiftiVolume.isNIfTI(path) || DicomFile.looksLikeDICOM(path) {
                // One file: every frame or slice, in file order.
                let dir = (path as NSString).deletingLastPathComponent, file = (path as NSString).lastPathComponent
                let source = MedicalSource(dir: dir.isEmpty ? "." : dir, window: try chosen(path), maxPixels: maxPixels)
                let count: Int, series: String, isDICOM: Bool
                switch try MedicalCache.shared.load(source.dir + "/" + file, maxPixels: maxPixels) {  // the path source.image reads, so one decode
                case .dicom(let d): count = d.frames; series = d.seriesUID; isDICOM = true
                case .nifti(let v): count = v.sliceCount; series = path; isDICOM = false
                }
                for k in 0..<count {
                    let sample = Sample(file: file, label: 0, line: 0, frame: count > 1 || NiftiVolume.isNIfTI(path) ? k : nil)
                    out.append(PredictInput(name: (dir.isEmpty ? "" : dir + "/") + sample.name, image: try source.image(sample), series: series,
                                            dicom: isDICOM ? (path, sample.frame) : nil, stem: stem(file, frame: sample.frame)))
                }
            } else {
                out.append(PredictInput(name: path, image: try RasterImage.read(path, maxPixels: maxPixels), series: nil, dicom: nil,
                                        stem: stem((path as NSString).lastPathComponent, frame: nil)))
            }
        }
        return out
    }
}
