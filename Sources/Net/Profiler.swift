import Foundation

/// Wall-clock time per kind of work, for `disttrain bench --profile`.
/// Off by default: one branch per layer call when off.
public enum Profiler {
    public enum Kind: String, CaseIterable, Sendable {
        case convGemm = "conv GEMM", im2col = "im2col/col2im", staging = "conv staging copies"
        case winograd = "Winograd transforms"
        case batchNorm = "BatchNorm(+ReLU)", pool = "pooling", residual = "residual add/ReLU", other = "fc, loss, other"
    }
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) static var totals = [Double](repeating: 0, count: Kind.allCases.count)

    @inline(__always)
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Times `body` under `kind` when enabled.
    @inline(__always)
    static func measure<T>(_ kind: Kind, _ body: () -> T) -> T {
        if !enabled { return body() }
        let t0 = now()
        let r = body()
        totals[Kind.allCases.firstIndex(of: kind)!] += now() - t0
        return r
    }

    public static func reset() { totals = totals.map { _ in 0 } }

    /// (kind, seconds) sorted by time.
    public static func report() -> [(String, Double)] {
        zip(Kind.allCases.map(\.rawValue), totals).filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
    }
}
