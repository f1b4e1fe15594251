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
        per method, values in [0, 1], plus filenames) and one overlay PNG per image and method. DICOM files, DICOM series \
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
    @OptionGroup var threading: ThreadOptions

    func validate() throws { guard !images.isEmpty else { throw ValidationError("give at least one image") } }

    func run() throws {
        let kinds = try explain.kinds()
        _ = threading.apply()
        let cfg = try TrainConfig.load(runDir + "/config.json")
        guard !cfg.mean.isEmpty else { throw RuntimeError("'\(runDir)/config.json' has no input normalisation (mean, std)") }
        let net = ResNet(cfg.netConfig)
        try Checkpoint.load("\(runDir)/ckpt/\(explain.checkpoint)", into: net)
        net.setTraining(false)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let S = cfg.imageSize
        let maker = BatchMaker(channels: 1, height: S, width: S, size: S, mean: cfg.mean, std: cfg.std, outChannels: cfg.inChannels)
        let explainer = try CAMExplainer(net: net)
        let inputs = try PredictInput.expand(images, window: window, runWindow: cfg.window.flatMap(Window.init(argument:)),
                                             maxPixels: limits.maxPixels)
        var csv = "file,p_\((cfg.classNames.last ?? "1").lowercased()),predicted\n"
        var maps = [String: [Float]](), perSeries: [(String, [Double])] = []
        func className(_ k: Int) -> String { cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)" }
        for input in inputs {
            let img = input.image.converted(channels: 1).resized(width: S, height: S)
            let x = Tensor([1, cfg.inChannels, S, S])
            img.pixels.withUnsafeBufferPointer { maker.fill(x, slot: 0, bytes: $0.baseAddress!, aug: .identity) }
            let p = tta.probabilities(net, x)[0]
            let k = p.indices.max { p[$0] < p[$1] }!
            csv += "\"\(input.name.replacingOccurrences(of: "\"", with: "\"\""))\",\(String(format: "%.6f", p.last!)),\(className(k))\n"
            if let series = input.series {
                let pk = Double(p.last!)
                if perSeries.last?.0 == series { perSeries[perSeries.count - 1].1.append(pk) } else { perSeries.append((series, [pk])) }
            }
            let gray = img.pixels.map { Float($0) / 255 }
            let stem = input.stem
            for kind in kinds {
                let m = explainer.explain(x, method: kind).maps
                maps[kind.rawValue, default: []] += m
                try RasterImage(width: S, height: S, channels: 3, pixels: overlay(gray: gray, cam: m))
                    .writePNG("\(out)/\(stem)-\(kind.rawValue).png")
            }
        }
        if !perSeries.isEmpty {
            var rows = "series,slices,mean_p_\((cfg.classNames.last ?? "1").lowercased()),max_p,predicted_by_mean\n"
            for (series, ps) in perSeries {
                let mean = ps.reduce(0, +) / Double(ps.count), mx = ps.max()!
                rows += "\"\(series)\",\(ps.count),\(String(format: "%.6f", mean)),\(String(format: "%.6f", mx)),"
                    + "\(className(mean >= 0.5 ? cfg.classNames.count - 1 : 0))\n"
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
            if isDir.boolValue {
                // A folder: its series found, ordered and windowed as prepare does.
                let source = MedicalSource(dir: path, window: try chosen(path))
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
                let source = MedicalSource(dir: dir.isEmpty ? "." : dir, window: try chosen(path))
                let count: Int, series: String
                switch try MedicalCache.shared.load(source.dir + "/" + file) {  // the path source.image reads, so one decode
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
