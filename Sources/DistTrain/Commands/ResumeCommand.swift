import ArgumentParser

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue an interrupted run exactly where its last good checkpoint left it (any number of ranks).")

    @Argument(help: "The run folder (holds config.json and ckpt/).") var runDir: String
    @Option(help: "Raise the total number of epochs.") var epochs: Int?
    @OptionGroup var session: SessionOptions

    func validate() throws {
        if let e = epochs, let problem = TrainConfig.problem(\.epochs, e) { throw ValidationError(problem) }
    }

    func run() throws {
        try withCommunicator(debug: session.debug, threads: session.threading) { comm in
            var cfg = try TrainConfig.load(runDir + "/config.json")
            cfg.run = runDir
            let lock = comm.isRoot ? try RunLock.acquire(runDir) : nil
            defer { withExtendedLifetime(lock) {} }
            if let e = epochs { cfg.epochs = e }
            cfg.stopAfterEpochs = session.stopAfter
            guard cfg.batchSize % comm.size == 0 else {
                throw RuntimeError("global batch \(cfg.batchSize) does not split evenly over \(comm.size) ranks")
            }
            if let first = cfg.problems().first { throw RuntimeError(first) }
            if comm.isRoot, epochs != nil { try cfg.save(to: runDir + "/config.json") }
            let trainer = try Trainer(config: cfg, comm: comm, settings: session.threading.settings, debug: session.debug, resume: true)
            let before = trainer.state.epoch
            try trainer.run()
            // A source built by pretrain has no val split and is not a CT model: no report.
            let isSource = trainer.dataset[split: .val].isEmpty
            if session.eval && !isSource && before < cfg.epochs { try finalEvaluation(trainer, comm: comm) }
        }
    }
}
