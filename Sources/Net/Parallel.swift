import Foundation

/// Threads for the engine: GEMMs are split over them and so are its own
/// loops (BN, ReLU, im2col, pooling). A value: each layer holds its engine's
/// (`Engine.parallel`), so two models in one process may use different counts.
/// The pool behind it is GCD's, which needs no setting.
public struct Parallel: Sendable, Equatable {
    public let threads: Int

    public init(threads: Int) { self.threads = max(1, threads) }

    /// Runs body(lo, hi) over `0..<n` split into at most `threads` contiguous
    /// chunks (boundaries rounded to multiples of `align`). Work below `grain`
    /// items per thread runs inline on the caller.
    @inline(__always)
    public func chunks(_ n: Int, grain: Int = 1, align: Int = 1, _ body: (Int, Int) -> Void) {
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
