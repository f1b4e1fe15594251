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
        per method, values in [0, 1], plus filenames) and one overlay PNG per image and method.
        """)

    @Argument(help: "PNG or JPEG images.") var images: [String]
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
        var csv = "file,p_\((cfg.classNames.last ?? "1").lowercased()),predicted\n"
        var maps = [String: [Float]]()
        for path in images {
            let img = try RasterImage.read(path, maxPixels: limits.maxPixels).converted(channels: 1).resized(width: S, height: S)
            let x = Tensor([1, cfg.inChannels, S, S])
            img.pixels.withUnsafeBufferPointer { maker.fill(x, slot: 0, bytes: $0.baseAddress!, aug: .identity) }
            let p = tta.probabilities(net, x)[0]
            let k = p.indices.max { p[$0] < p[$1] }!
            let predicted = cfg.classNames.indices.contains(k) ? cfg.classNames[k] : "\(k)"
            csv += "\"\(path.replacingOccurrences(of: "\"", with: "\"\""))\",\(String(format: "%.6f", p.last!)),\(predicted)\n"
            let gray = img.pixels.map { Float($0) / 255 }
            let stem = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            for kind in kinds {
                let m = explainer.explain(x, method: kind).maps
                maps[kind.rawValue, default: []] += m
                try RasterImage(width: S, height: S, channels: 3, pixels: overlay(gray: gray, cam: m))
                    .writePNG("\(out)/\(stem)-\(kind.rawValue).png")
            }
        }
        try durableWrite(out + "/predictions.csv", data: Data(csv.utf8))
        try durableHDF5(out + "/cams.h5") { f in
            for (name, v) in maps { try f.write(name, shape: [images.count, S, S], floats: v) }
            try f.writeStrings("filenames", images)
        }
        print("wrote \(out)/predictions.csv, \(out)/cams.h5 and \(images.count * kinds.count) overlays")
    }
}
