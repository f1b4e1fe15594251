import ArgumentParser
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ResNet on the CT set (the default subcommand); under mpirun, data-parallel over ranks.",
        discussion: """
        Examples:
          mpirun -n 4 disttrain --method scratch
          disttrain --method scratch --debug --epochs 1 --image-size 112
        Rank 0 writes the run folder: config.json, ckpt/{epoch-NNNN,last,best}.h5, metrics.csv, metrics.h5.
        """)

    @OptionGroup var options: TrainOptions
    @OptionGroup var session: SessionOptions

    func run() throws {
        try withCommunicator(debug: session.debug, threads: session.threading) { comm in
            var cfg = options.config
            cfg.stopAfterEpochs = session.stopAfter
            if cfg.method == .transfer && options.pretrained == nil && !FileManager.default.fileExists(atPath: defaultSource) {
                if comm.isRoot {
                    print("no transfer source at \(defaultSource): building it first with `disttrain pretrain` on \(Pretrain.defaultData) "
                          + "(ResNet-18, 32x32, \(Pretrain.defaultEpochs) epochs: about 30-40 minutes on 2 cores)")
                }
                try startTraining(Pretrain.defaultConfig(arch: cfg.arch), comm: comm, debug: session.debug, evaluate: false,
                                  settings: session.threading.settings)
            }
            try startTraining(cfg, comm: comm, debug: session.debug, evaluate: session.eval, settings: session.threading.settings)
        }
    }
}
