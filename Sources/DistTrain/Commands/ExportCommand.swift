import ArgumentParser
import Foundation
import Net

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a run's model as ONNX (opset 17): the inference graph with BatchNorm folded, softmax probabilities out.",
        discussion: """
        The input is the normalised image [batch, C, S, S]; the normalisation (mean, std), input size, class names, \
        architecture and (DICOM/NIfTI runs) HU window are in the model's metadata_props. \
        Example: disttrain export checkpoints/transfer --onnx transfer.onnx
        """)

    @Argument(help: "The run folder.") var runDir: String
    @Option(help: "Output .onnx file.") var onnx: String
    @Option(help: "best, last, or a checkpoint file.") var checkpoint: String = "best"

    func run() throws {
        let cfg = try TrainConfig.load(runDir + "/config.json")
        guard !cfg.lungField else {
            throw RuntimeError("'\(runDir)/config.json': the run keeps only each image's lung field (--lung-field), a step before the "
                               + "network that the ONNX graph does not hold: its export would compute something else")
        }
        let path = ["best", "last"].contains(checkpoint) ? "\(runDir)/ckpt/\(checkpoint).h5" : checkpoint
        let net = try RunModel.load(path, config: cfg, configPath: runDir + "/config.json", precision: false)
        var meta = ONNXExport.Metadata(mean: cfg.mean, std: cfg.std, classNames: cfg.classNames, imageSize: cfg.imageSize,
                                       arch: cfg.arch.rawValue)
        // DICOM/NIfTI runs: the HU window their slices were made with, which a user of the model must apply first.
        meta.window = cfg.window ?? ""
        let bytes = try ONNXExport.model(net, metadata: meta)
        try durableWrite(onnx, data: Data(bytes))
        print(String(format: "wrote %@ (%.1f MB): %@, %d input channel(s), %dx%d, %d classes, from %@", onnx, Double(bytes.count) / 1e6,
                     cfg.arch.rawValue, cfg.inChannels, cfg.imageSize, cfg.imageSize, cfg.numClasses, path))
    }
}
