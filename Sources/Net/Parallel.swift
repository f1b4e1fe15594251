import CDNNL
import Foundation

/// Threads for the engine: GEMMs are split over them and so are its own
/// loops (BN, ReLU, im2col, pooling). Set once at start-up with
/// `Parallel.configure(threads:)`, before training.
public enum Parallel {
    nonisolated(unsafe) public private(set) static var threads: Int = 1

    /// Uses `n` threads for the engine and keeps OpenBLAS single-threaded.
    public static func configure(threads n: Int) {
        threads = max(1, n)
        BLAS.setThreads(1)
        dt_dnnl_set_threads(Int32(threads))
    }

    /// Runs body(lo, hi) over `0..<n` split into at most `threads` contiguous
    /// chunks (boundaries rounded to multiples of `align`). Work below `grain`
    /// items per thread runs inline on the caller.
    @inline(__always)
    public static func chunks(_ n: Int, grain: Int = 1, align: Int = 1, _ body: (Int, Int) -> Void) {
        let t = min(threads, max(1, n / max(grain, 1)))
        if t <= 1 || n <= 1 {
            body(0, n)
            return
        }
        DispatchQueue.concurrentPerform(iterations: t) { k in
            var lo = n * k / t, hi = n * (k + 1) / t
            if align > 1 {
                lo = k == 0 ? 0 : (lo + align - 1) / align * align
                hi = k == t - 1 ? n : (hi + align - 1) / align * align
            }
            if lo < hi { body(lo, min(hi, n)) }
        }
    }
}
