import ArgumentParser

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write CT-like phantom slices (lesions in the positive class, with masks) in the layout `prepare` reads.")

    @Option(help: "Output folder.") var out: String
    @Option(help: "Number of slices.") var n: Int = 400
    @Option(help: "Size (square).") var size: Int = 112
    @Option(help: "Seed.") var seed: UInt64 = 0

    func validate() throws { guard n >= 10, size >= 32 else { throw ValidationError("--n must be >= 10 and --size >= 32") } }

    func run() throws {
        try Phantom.write(to: out, n: n, size: size, seed: seed)
        print("wrote \(n) phantom slices (\(size)x\(size)) with masks to \(out)")
    }
}
