import Foundation
import Net

/// Random but reproducible augmentation of one training sample, drawn from
/// an RNG seeded by (seed, epoch, sample index): the same on any number of
/// ranks, and the same again after a resume.
public struct Augmentation: Sendable, Equatable {
    public var rotation = 0.0       // radians
    public var scale = 1.0          // > 1 zooms in
    public var shiftX = 0.0, shiftY = 0.0  // in units of half the image
    public var flip = false
    public var brightness = 0.0     // added, in [0, 1] pixel units
    public var contrast = 1.0       // around mid-gray

    public static let identity = Augmentation()

    /// Ranges: rotation +-10 deg, scale 0.9..1.1, shift +-8 %, flip p = 0.5,
    /// brightness +-0.1, contrast 0.9..1.1.
    public static func random(seed: UInt64, epoch: Int, index: Int) -> Augmentation {
        var rng = Xoshiro256(seed: seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(epoch) &* 0xBF58_476D_1CE4_E5B9 ^ UInt64(index) &+ 0x94D0_49BB)
        var a = Augmentation()
        a.rotation = rng.uniform(-10, 10) * Double.pi / 180
        a.scale = rng.uniform(0.9, 1.1)
        a.shiftX = rng.uniform(-0.08, 0.08) * 2
        a.shiftY = rng.uniform(-0.08, 0.08) * 2
        a.flip = rng.unit() < 0.5
        a.brightness = rng.uniform(-0.1, 0.1)
        a.contrast = rng.uniform(0.9, 1.1)
        return a
    }
}

/// Turns stored uint8 CHW images into normalised float batches of the
/// training resolution: ((pixel/255 after augmentation) - mean) / std.
public struct BatchMaker {
    public let channels: Int, height: Int, width: Int, size: Int
    public let mean: [Float], std: [Float]

    /// Channels of the network input; a 1-channel data set is replicated into them.
    public let outChannels: Int

    /// Normalisation `mean`/`std` per network input channel (the data set's,
    /// or a transfer source's).
    public init(dataset: Dataset, size: Int, outChannels: Int? = nil, mean: [Double]? = nil, std: [Double]? = nil) {
        self.init(channels: dataset.channels, height: dataset.height, width: dataset.width, size: size,
                  mean: mean ?? dataset.mean, std: std ?? dataset.std, outChannels: outChannels)
    }

    public init(channels: Int, height: Int, width: Int, size: Int, mean: [Double], std: [Double], outChannels: Int? = nil) {
        self.channels = channels; self.height = height; self.width = width; self.size = size
        self.outChannels = outChannels ?? channels
        let oc = self.outChannels
        self.mean = (0..<oc).map { Float(mean[min($0, mean.count - 1)]) }
        self.std = (0..<oc).map { Float(std[min($0, std.count - 1)]) }
    }

    /// Writes image k of `bytes` into out[k] (C, size, size). The output pixel
    /// centre q in [-1, 1]^2 samples the source at R(rotation) q / scale + shift
    /// (bilinear, black outside); the identity with size == H == W copies exactly.
    public func fill(_ out: Tensor, slot k: Int, bytes: UnsafePointer<UInt8>, aug: Augmentation) {
        let C = outChannels, H = height, W = width, S = size
        let src = bytes
        let dst = out.data + k * C * S * S
        let cr = cos(aug.rotation) / aug.scale, sr = sin(aug.rotation) / aug.scale
        let identity = aug == .identity && S == H && S == W
        for c in 0..<C {
            let plane = src + min(c, channels - 1) * H * W, o = dst + c * S * S
            let m = mean[c], inv = 1 / std[c]
            let contrast = Float(aug.contrast), bright = Float(aug.brightness)
            for y in 0..<S {
                let qy = (Double(y) + 0.5) / Double(S) * 2 - 1
                for x in 0..<S {
                    var v: Float
                    if identity {
                        v = Float(plane[y * W + x]) / 255
                    } else {
                        var qx = (Double(x) + 0.5) / Double(S) * 2 - 1
                        if aug.flip { qx = -qx }
                        let px = cr * qx - sr * qy + aug.shiftX, py = sr * qx + cr * qy + aug.shiftY
                        let fx = (px + 1) / 2 * Double(W) - 0.5, fy = (py + 1) / 2 * Double(H) - 0.5
                        let x0 = Int(fx.rounded(.down)), y0 = Int(fy.rounded(.down))
                        let wx = Float(fx - Double(x0)), wy = Float(fy - Double(y0))
                        func at(_ yy: Int, _ xx: Int) -> Float {
                            (yy < 0 || yy >= H || xx < 0 || xx >= W) ? 0 : Float(plane[yy * W + xx])
                        }
                        v = ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1))
                            + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1))) / 255
                        v = (v - 0.5) * contrast + 0.5 + bright
                    }
                    o[y * S + x] = (v - m) * inv
                }
            }
        }
    }

    /// A batch of `indices` from the data set (augmented when `augmentEpoch` is set).
    public func batch(_ dataset: Dataset, _ indices: [Int], into out: Tensor, seed: UInt64, augmentEpoch: Int?) throws -> [Int] {
        out.resize([indices.count, outChannels, size, size])
        let bytes = try dataset.readImages(indices)
        let per = channels * height * width
        bytes.withUnsafeBufferPointer { b in
            Parallel.chunks(indices.count) { lo, hi in
                for k in lo..<hi {
                    let aug = augmentEpoch.map { Augmentation.random(seed: seed, epoch: $0, index: indices[k]) } ?? .identity
                    fill(out, slot: k, bytes: b.baseAddress! + k * per, aug: aug)
                }
            }
        }
        return indices.map { dataset.labels[$0] }
    }
}

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
