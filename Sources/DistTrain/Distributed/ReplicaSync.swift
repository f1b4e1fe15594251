import Foundation
import Net

/// Keeping replicas identical, apart from the training loop (Horovod's
/// `broadcast_parameters` / `broadcast_optimizer_state`): rank 0's state goes
/// to every rank as contiguous blocks in torchvision name order; BN running
/// statistics are averaged; parameter checksums are compared.
public enum ReplicaSync {
    /// Parameters, BN buffers and counters from rank 0.
    public static func broadcastModel(_ net: ResNet, _ comm: Communicator) {
        guard comm.size > 1 else { return }
        let s = net.store
        comm.broadcast(UnsafeMutableRawPointer(s.values), bytes: s.parameterCount * 4)
        comm.broadcast(UnsafeMutableRawPointer(s.buffers), bytes: s.bufferCount * 4)
        comm.broadcast(UnsafeMutableRawPointer(s.counters), bytes: s.counterCount * 8)
    }

    /// Every state buffer of the optimizer and the per-parameter step counts from rank 0.
    public static func broadcastOptimizer(_ optimizer: Optimizer, _ comm: Communicator) {
        guard comm.size > 1 else { return }
        for state in optimizer.state { comm.broadcast(UnsafeMutableRawPointer(state.values), bytes: state.count * 4) }
        var steps = optimizer.steps
        comm.broadcast(&steps)
        optimizer.steps = steps
    }

    /// BN running statistics are per-rank buffers (each rank saw its own
    /// batches): average them before evaluating or saving, as DDP users must.
    public static func averageBatchNormStatistics(_ net: ResNet, _ comm: Communicator) {
        comm.allreduceMean(net.store.buffers, count: net.store.bufferCount)
    }

    /// Replicas must hold the same parameters; a mismatch stops the job.
    public static func checkReplicas(_ net: ResNet, _ comm: Communicator, epoch: Int) throws {
        guard comm.size > 1 else { return }
        let (sum, abs) = net.store.checksum()
        let hi = comm.allreduceMax(sum), lo = -comm.allreduceMax(-sum)
        if hi != lo {
            throw RuntimeError("replicas diverged after epoch \(epoch): parameter checksums range \(lo)...\(hi) (|x| sum \(abs) here)")
        }
    }

    /// Peak resident set size of every rank so far, MiB, in rank order.
    public static func peakRSSPerRank(_ comm: Communicator) -> [Double] {
        var v = [Double](repeating: 0, count: comm.size)
        v[comm.rank] = peakRSSMiB()
        comm.allreduceSum(&v)
        return v
    }
}
