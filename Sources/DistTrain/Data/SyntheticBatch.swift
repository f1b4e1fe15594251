import Net

/// Synthetic inputs (standard normal) and labels (cycling over the classes),
/// deterministic by seed: the data of `bench` and `smoke`.
func syntheticBatch(batch: Int, channels: Int, size: Int, classes: Int, seed: UInt64) -> (x: Tensor, labels: [Int]) {
    var rng = Xoshiro256(seed: seed)
    let x = Tensor([batch, channels, size, size])
    for i in 0..<x.count { x[i] = Float(rng.normal()) }
    let labels = (0..<batch).map { $0 % classes }
    return (x, labels)
}
