import ArgumentParser
import Net

struct ImportWeights: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-weights",
        abstract: "Turn torchvision/timm ResNet weights (.pth zip or .safetensors) into a transfer source (HDF5).",
        discussion: "Handles a state_dict wrapper key and a module. prefix; float16/bfloat16 become float32. Never runs pickled code.")

    @Argument(help: "The weights file (.pth/.pt from torch.save, or .safetensors).") var file: String
    @Option(help: "Output HDF5 source.") var out: String
    @Option(help: "Expected architecture (refused when the file holds another).") var arch: Arch?

    func run() throws {
        let tensors = try PyTorchImport.read(file)
        let (net, loaded, skipped) = try WeightImporter.build(tensors, arch: arch, path: file)
        var cfg = TrainConfig()
        cfg.arch = net.config.arch; cfg.inChannels = net.config.inChannels; cfg.numClasses = net.config.numClasses
        cfg.width = net.config.width; cfg.mean = [0.485, 0.456, 0.406]; cfg.std = [0.229, 0.224, 0.225]
        try Checkpoint.save(out, net: net, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: net.store), state: TrainState(),
                            config: cfg)
        let dtypes = Set(tensors.values.map(\.dtype)).sorted().joined(separator: ", ")
        print("loaded \(loaded.count) tensors (\(dtypes)) as \(net.config.arch.rawValue), \(net.config.inChannels) input channels, "
              + "\(net.config.numClasses) classes")
        if !skipped.isEmpty {
            print("skipped \(skipped.count): \(skipped.prefix(8).joined(separator: ", "))\(skipped.count > 8 ? ", ..." : "")")
        }
        print("wrote \(out); use it with --method transfer --pretrained \(out)")
    }
}
