import Foundation

/// Wall-clock time per kind of work, for `disttrain bench --profile`: one per
/// model (`ResNet.profiler`), shared by its layers, on when its engine says
/// `profiling`. Off: one branch per layer call. Layers call it from the thread
/// that runs the model (the parallel loops are inside what it times).
public final class Profiler {
    public enum Kind: String, CaseIterable, Sendable {
        case dnnlConv = "convolutions (oneDNN)"
        case convGemm = "conv GEMM", im2col = "im2col/col2im", staging = "conv staging copies"
        case winograd = "Winograd transforms"
        case batchNorm = "BatchNorm(+ReLU)", pool = "pooling", residual = "residual add/ReLU", other = "fc, loss, other"
    }
    public let enabled: Bool
    private var totals = [Double](repeating: 0, count: Kind.allCases.count)
    /// Floating-point operations of the convolutions timed (2 per multiply-add), for their FLOP/s.
    public private(set) var convFlops = 0.0

    public init(enabled: Bool) { self.enabled = enabled }

    @inline(__always)
    func countConv(_ flops: Double) { if enabled { convFlops += flops } }

    @inline(__always)
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Times `body` under `kind` when enabled.
    @inline(__always)
    func measure<T>(_ kind: Kind, _ body: () -> T) -> T {
        if !enabled { return body() }
        let t0 = Profiler.now()
        let r = body()
        totals[Kind.allCases.firstIndex(of: kind)!] += Profiler.now() - t0
        return r
    }

    public func reset() {
        totals = totals.map { _ in 0 }
        convFlops = 0
    }

    /// Seconds spent in `kind` since the last reset.
    public func seconds(_ kind: Kind) -> Double { totals[Kind.allCases.firstIndex(of: kind)!] }

    /// (kind, seconds) sorted by time.
    public func report() -> [(String, Double)] {
        zip(Kind.allCases.map(\.rawValue), totals).filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
    }
}
