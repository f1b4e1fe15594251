import CDNNL

// The engine's settings as one value: where convolutions run, the precision
// of the GEMMs, the threads, whether work is timed, and the native backend's
// tuning. A model is built with one (`ResNet(config, engine:)`), each layer
// keeps it and reads it once per call, so nothing in Net is process-wide and
// two models in one process (or two tests) can differ. DistTrain builds it
// from the command line and the run's config.
//
// What the C libraries themselves hold per process, OpenBLAS's thread count
// and oneDNN's OpenMP pool, is set by `Engine.configureLibraries(threads:)`,
// once at start-up (DistTrain's --threads); the engine never changes it.

public struct Engine: Sendable, Equatable {
    /// Where convolutions run (both compute the same function; they round differently).
    public var backend: ConvBackend
    /// The precision of the layers' GEMMs; `bf16` needs `BF16.supported` (`check()`).
    public var precision: Precision
    /// Threads the layers split their GEMMs and loops over (`parallel`).
    public var threads: Int
    /// Time each kind of work into the model's `Profiler` (bench --profile).
    public var profiling: Bool
    // The next three tune the native backend only.
    /// Minimum GEMM width (columns) a group of images aims for in im2col convolutions.
    public var gemmColumns: Int
    /// Run 3x3 stride-1 convolutions as Winograd F(2x2, 3x3) (Winograd.swift).
    public var winograd: Bool
    /// Minimum tiles (GEMM columns) per image group in Winograd convolutions.
    public var winogradColumns: Int

    /// The defaults are what the engine ran before it had settings: oneDNN, fp32, one thread.
    public init(backend: ConvBackend = .onednn, precision: Precision = .fp32, threads: Int = 1, profiling: Bool = false,
                gemmColumns: Int = 2048, winograd: Bool = true, winogradColumns: Int = 2048) {
        self.backend = backend; self.precision = precision; self.threads = max(1, threads); self.profiling = profiling
        self.gemmColumns = gemmColumns; self.winograd = winograd; self.winogradColumns = winogradColumns
    }

    /// bf16 on a CPU without AVX512-BF16 is an error, not an emulation.
    public func check() throws {
        if precision == .bf16 && !BF16.supported { throw PrecisionError() }
    }

    /// For the layers' inits: an engine `check()` refuses is a programming error (a
    /// bf16 GEMM on a CPU without AVX512-BF16 would die of an illegal instruction).
    func requireSupported() {
        precondition(precision == .fp32 || BF16.supported, "\(PrecisionError())")
    }

    /// The threads, as the loops take them.
    public var parallel: Parallel { Parallel(threads: threads) }

    /// Whether convolutions write channels-last outputs: oneDNN in bf16 (ChannelsLast.swift).
    public var channelsLast: Bool { backend == .onednn && precision == .bf16 }

    /// Process-wide, once at start-up: OpenBLAS single-threaded (the engine splits each
    /// GEMM over its own threads, BLAS.swift) and oneDNN's OpenMP pool at `threads`.
    /// These live in the C libraries, not in an engine value; without this call they
    /// keep their own defaults (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS), as tests do.
    public static func configureLibraries(threads: Int) {
        BLAS.setThreads(1)
        dt_dnnl_set_threads(Int32(max(1, threads)))
    }
}
