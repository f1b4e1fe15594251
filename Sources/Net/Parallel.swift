import Foundation

/// Thread count for Net's own loops (BN, ReLU, im2col, pooling); BLAS has its
/// own threads. Set once at start-up (`Parallel.threads = n`), before training.
public enum Parallel {
    nonisolated(unsafe) public static var threads: Int = 1

    /// Runs body(lo, hi) over `0..<n` split into at most `threads` contiguous
    /// chunks. Work below `grain` items runs inline on the caller.
    @inline(__always)
    public static func chunks(_ n: Int, grain: Int = 1, _ body: (Int, Int) -> Void) {
        let t = min(threads, max(1, n / max(grain, 1)))
        if t <= 1 || n <= 1 {
            body(0, n)
            return
        }
        DispatchQueue.concurrentPerform(iterations: t) { k in
            let lo = n * k / t, hi = n * (k + 1) / t
            if lo < hi { body(lo, hi) }
        }
    }
}
