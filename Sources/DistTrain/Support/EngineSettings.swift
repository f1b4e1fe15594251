import Foundation
import Net

/// What the command line and the environment choose of the engine, apart from a
/// run: the threads (--threads) and the convolution backend (DISTTRAIN_CONV), and
/// bench's profiling and tuning. A run's precision (config.json, or the training
/// options that write it) completes them into the `Engine` its network is built
/// with, so train, resume, eval and predict compute a run in the same precision.
/// The defaults are what a process that set nothing ran before: one thread, the
/// backend DISTTRAIN_CONV names.
public struct EngineSettings: Sendable, Equatable {
    public var threads: Int
    public var backend: ConvBackend
    public var profiling = false
    /// bench --gemm-columns (native backend tuning); nil: the engine's default.
    public var gemmColumns: Int?
    /// Inference from a checkpoint (eval, eval --data, predict) on the fused path (`FusedInference`: BatchNorm
    /// folded, oneDNN post-ops), where the backend is oneDNN; DISTTRAIN_INFERENCE=plain runs the training
    /// network's eval-mode forward instead (the reference the fused path is compared with).
    public var fusedInference: Bool

    public init(threads: Int = 1, backend: ConvBackend = .fromEnvironment(),
                fusedInference: Bool = ProcessInfo.processInfo.environment["DISTTRAIN_INFERENCE"] != "plain") {
        self.threads = threads; self.backend = backend; self.fusedInference = fusedInference
    }

    /// The engine for a network computing in `precision`; bf16 on a CPU without
    /// AVX512-BF16 is an error (PrecisionError, which names --precision).
    public func engine(_ precision: Precision) throws -> Engine {
        var e = Engine(backend: backend, precision: precision, threads: threads, profiling: profiling)
        if let g = gemmColumns { e.gemmColumns = g }
        try e.check()
        return e
    }
}

extension ConvBackend {
    /// DISTTRAIN_CONV=native selects the engine's own convolutions (the reference path;
    /// launch/test-kernel-variants runs the suite so); unset or anything else, oneDNN.
    public static func fromEnvironment() -> ConvBackend {
        ProcessInfo.processInfo.environment["DISTTRAIN_CONV"].flatMap(ConvBackend.init(rawValue:)) ?? .onednn
    }
}
