import ArgumentParser

/// The `disttrain` command: one subcommand per file of this folder, listed here.
public struct DistTrainCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "disttrain",
        abstract: "Data-parallel ResNet training on CT slices over MPI, with CAM explanations.",
        subcommands: [Train.self, Resume.self, Eval.self, Report.self, Predict.self, Prepare.self, Pretrain.self, ImportWeights.self,
                      AuditData.self, Groups.self, Export.self, Synth.self, Bench.self, Smoke.self, Serve.self],
        defaultSubcommand: Train.self)

    public init() {}
}
