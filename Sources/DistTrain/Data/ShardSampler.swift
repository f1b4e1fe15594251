import Net

/// The DistributedSampler of PyTorch, for fixed global batches: each epoch a
/// permutation seeded by (seed, epoch); global batch b goes to ranks as
/// contiguous slices of B/size; the incomplete last batch is dropped, so every
/// rank runs the same number of steps.
public struct ShardSampler: Sendable {
    public let count: Int, batchSize: Int, rank: Int, size: Int, seed: UInt64

    public init(count: Int, batchSize: Int, rank: Int, size: Int, seed: UInt64) {
        self.count = count; self.batchSize = batchSize; self.rank = rank; self.size = size; self.seed = seed
    }

    public var stepsPerEpoch: Int { count / batchSize }
    public var localBatch: Int { batchSize / size }

    public func permutation(epoch: Int) -> [Int] {
        var rng = Xoshiro256(seed: seed ^ (UInt64(epoch) &+ 1) &* 0xD1B5_4A32_D192_ED03)
        var p = Array(0..<count)
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }

    /// Positions (into the split) this rank trains on at `step` of `epoch`.
    public func localIndices(epoch: Int, step: Int, permutation p: [Int]) -> [Int] {
        let start = step * batchSize + rank * localBatch
        return Array(p[start..<(start + localBatch)])
    }
}
