import Foundation
import Net

/// Turns stored uint8 CHW images into normalised float batches of the
/// training resolution: ((pixel/255 after augmentation) - mean) / std.
public struct BatchMaker {
    public let channels: Int, height: Int, width: Int, size: Int
    public let mean: [Float], std: [Float]

    /// Channels of the network input; a 1-channel data set is replicated into them.
    public let outChannels: Int
    /// Threads `batch` fills images over (the engine's; images are independent, so any count gives the same batch).
    public var threads = 1
    /// Every image of a batch keeps only its lung field (`TrainConfig.lungField`):
    /// outside its dilated lung mask it becomes its darkest grey.
    public var lungField = false

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

    /// In place: each image of `out` only within its dilated lung mask (`LungOcclusion`).
    public func keepLungField(_ out: Tensor) {
        LungOcclusion.occludeOutsideLungs(out, mean: mean, std: std, dilation: LungOcclusion.dilation(size: size))
    }

    /// A batch of `indices` from the data set (augmented when `augmentEpoch` is set),
    /// over `threads` or, with `parallel` false, on the calling thread alone.
    public func batch(_ dataset: Dataset, _ indices: [Int], into out: Tensor, seed: UInt64, augmentEpoch: Int?,
                      parallel: Bool = true) throws -> [Int] {
        out.resize([indices.count, outChannels, size, size])
        let bytes = try dataset.readImages(indices)
        let per = channels * height * width
        bytes.withUnsafeBufferPointer { b in
            Parallel(threads: threads).chunks(indices.count, grain: parallel ? 1 : indices.count + 1) { lo, hi in
                for k in lo..<hi {
                    let aug = augmentEpoch.map { Augmentation.random(seed: seed, epoch: $0, index: indices[k]) } ?? .identity
                    fill(out, slot: k, bytes: b.baseAddress! + k * per, aug: aug)
                }
            }
        }
        if lungField { keepLungField(out) }
        return indices.map { dataset.labels[$0] }
    }
}

/// Double buffering for training: the next batch is read and augmented on a
/// background thread while the current one trains. A batch is a function of
/// (seed, epoch, index) alone, so what each step sees does not depend on the
/// timing. One batch is in flight at a time; `take` hands over the tensor,
/// which stays the caller's until the batch after the next one is started.
final class BatchPrefetcher {
    private let queue = DispatchQueue(label: "disttrain.batches")
    private let buffers = [Tensor(), Tensor()]
    private var free = 0
    private var pending: Pending?

    private final class Pending: @unchecked Sendable {
        let group = DispatchGroup()
        let tensor: Tensor
        var result: Result<[Int], Error> = .success([])
        init(_ t: Tensor) { tensor = t }
    }

    /// Starts `make` (fill the tensor, return the labels) into the free buffer.
    func start(_ make: @escaping (Tensor) throws -> [Int]) {
        if let left = pending { left.group.wait() }  // an epoch that ended by an error left one behind
        let p = Pending(buffers[free])
        free ^= 1
        p.group.enter()
        queue.async {
            p.result = Result { try make(p.tensor) }
            p.group.leave()
        }
        pending = p
    }

    /// The batch started last, once it is ready; rethrows its error.
    func take() throws -> (Tensor, [Int]) {
        guard let p = pending else { preconditionFailure("take() without start()") }
        pending = nil
        p.group.wait()
        return (p.tensor, try p.result.get())
    }
}
