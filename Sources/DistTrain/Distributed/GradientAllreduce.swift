import Foundation
import Net

/// How the gradients are averaged over ranks each step.
public enum AllreduceMode: String, Codable, CaseIterable, Sendable {
    /// After the whole backward pass, bucket by bucket (MPI_Allreduce).
    case blocking
    /// Each bucket's MPI_Iallreduce starts as soon as backward has produced
    /// it (DDP's and Horovod's overlap); the update waits for all of them.
    case overlapped
}

/// The gradient all-reduce of a data-parallel step. The one contiguous
/// gradient buffer is cut into buckets of about `bucketElements` from its end
/// (the last layers' gradients are ready first), the same buckets in both
/// modes, so both sum the same slices in the same way: for two ranks the
/// results are bitwise identical (a test says so).
public final class GradientAllreduce {
    public let mode: AllreduceMode
    let comm: Communicator
    let grads: UnsafeMutablePointer<Float>
    let count: Int
    /// From the end of the buffer to its start.
    public let buckets: [Range<Int>]
    private var started = 0

    public init(comm: Communicator, store: ParameterStore, mode: AllreduceMode, bucketElements: Int) {
        self.comm = comm; self.mode = mode; grads = store.grads; count = store.parameterCount
        var b: [Range<Int>] = [], end = count
        while end > 0 {
            let lo = max(0, end - max(bucketElements, 1))
            b.append(lo..<end)
            end = lo
        }
        buckets = b
    }

    /// Starts every bucket whose gradients are all final (everything from
    /// `offset` to the end is), and lets those already started progress.
    func gradientsFinal(from offset: Int) {
        guard mode == .overlapped, comm.size > 1 else { return }
        while started < buckets.count && buckets[started].lowerBound >= offset {
            comm.startAllreduceSum(grads + buckets[started].lowerBound, count: buckets[started].count)
            started += 1
        }
        comm.progress()
    }

    /// After backward: every bucket summed over ranks, then averaged.
    func finish() {
        guard comm.size > 1 else { return }
        switch mode {
        case .blocking:
            for r in buckets { comm.allreduceSum(grads + r.lowerBound, count: r.count) }
        case .overlapped:
            gradientsFinal(from: 0)
            comm.waitAll()
            started = 0
        }
        let inv = 1 / Float(comm.size)
        for i in 0..<count { grads[i] *= inv }
    }
}
