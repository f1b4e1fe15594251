import Foundation
import Net

/// The one inference path: a network with what turns inputs into its
/// probabilities and probabilities into a class. It owns the network (a run's
/// through `RunModel`: the run's precision, the checkpoint checked), the input
/// preprocessing (resolution, channels, normalisation; the resize of images
/// that are not the network's size), test-time augmentation, batching and the
/// decision rule. `Evaluator` (eval, the report, every training epoch: batches
/// from the data set, sharded over ranks) and `predict` (image files,
/// DICOM/NIfTI slices) take every probability and every predicted class from
/// here; CAMs and input gradients explain `net` with passes of their own (Cams).
public final class Classifier {
    public let net: ResNet
    public let numClasses: Int
    /// The network's input: `size` x `size` pixels in `inChannels` channels,
    /// each (pixel / 255 - mean[c]) / std[c]; empty mean/std: the data set's
    /// own (a configuration that has not been through `prepare` yet).
    public let size: Int, inChannels: Int
    public let mean: [Double], std: [Double]
    /// What a call without its own `tta` averages over.
    public var tta: TestTimeAugmentation
    /// Images per forward pass, memory for speed: an image's probabilities
    /// agree to 1e-6 in any batch (the head's OpenBLAS GEMM rounds a row
    /// inside a batch differently from a row alone; ClassifierTests).
    public var batchSize: Int
    /// Fills a batch from 8-bit gray images already at size x size (`input`).
    private let imageMaker: BatchMaker?
    /// The run keeps only the lung field of every image (`TrainConfig.lungField`).
    public let lungField: Bool
    /// The fused forward of `net`'s weights when `useFusedInference()` made it; nil: `net.forward`.
    public private(set) var fused: FusedInference?

    /// `net` as `config` describes its input; `batchSize` nil: config.evalBatchSize.
    public init(net: ResNet, config: TrainConfig, tta: TestTimeAugmentation = .none, batchSize: Int? = nil) {
        self.net = net
        numClasses = config.numClasses
        size = config.imageSize; inChannels = config.inChannels
        mean = config.mean; std = config.std
        self.tta = tta
        self.batchSize = max(1, batchSize ?? config.evalBatchSize)
        lungField = config.lungField
        imageMaker = config.mean.isEmpty || config.std.isEmpty ? nil
            : BatchMaker(channels: 1, height: size, width: size, size: size, mean: config.mean, std: config.std, outChannels: inChannels)
    }

    /// A run's classifier for inference: `checkpoint` through `RunModel.load`
    /// (an engine of `settings` in the run's precision, the checkpoint checked
    /// against config.json before the network is built), in eval mode.
    public static func load(_ checkpoint: String, config: TrainConfig, configPath: String, settings: EngineSettings = EngineSettings(),
                            tta: TestTimeAugmentation = .none, batchSize: Int? = nil) throws -> Classifier {
        let net = try RunModel.load(checkpoint, config: config, configPath: configPath, settings: settings)
        net.setTraining(false)
        let classifier = Classifier(net: net, config: config, tta: tta, batchSize: batchSize)
        if settings.fusedInference { classifier.useFusedInference() }
        return classifier
    }

    /// Probabilities from now on through `FusedInference` (BatchNorm folded into the convolutions, oneDNN
    /// post-ops, no training buffers), made from `net`'s weights as they are now: for a network that no
    /// longer changes (a loaded checkpoint), never during training. Where it cannot be made (the native
    /// backend) the plain forward stays. CAMs and input gradients still run on `net`.
    public func useFusedInference() {
        fused = nil
        guard net.engine.backend == .onednn else { return }
        do { fused = try FusedInference(net) } catch let e as FusedInferenceError where e.expected {
            // Weights out of the fused path's range: the plain forward, silently (it refuses what overflows).
        } catch {
            FileHandle.standardError.write(Data("disttrain: fused inference unavailable (\(error)); using the plain forward\n".utf8))
        }
    }

    /// The logits of x, normalised (N, inChannels, size, size), in eval mode: the fused forward when there
    /// is one. Should oneDNN refuse a shape there, it says so once on stderr and the plain forward takes over.
    func logits(_ x: Tensor) -> Tensor {
        if let f = fused {
            do { return try f.logits(x) } catch {
                FileHandle.standardError.write(Data("disttrain: fused inference unavailable (\(error)); using the plain forward\n".utf8))
                fused = nil
            }
        }
        return net.forward(x)
    }

    // MARK: the decision rule

    /// The decision threshold on p(class 1), the positive (last) class of a
    /// two-class run: an image is positive exactly when p > threshold, so a
    /// tie goes to class 0. That is the rule the figures were computed by
    /// (Stats' `p > 0.5`; eval's argmax, as `max(by:)` keeps the first of equal
    /// elements); the report's "predicted" and predict's series said `>=`,
    /// which differed only at exactly 0.5 (no committed result holds one).
    /// On softmax outputs (Loss.swift: p0 + p1 = 1 up to Double rounding) it
    /// is argmax but where p1 rounds to 0.5 and p0 to the Float just below
    /// (Floats are twice as dense below 0.5; logits 6e-8 to 1.2e-7 apart):
    /// argmax said 1, the threshold 0 (ClassifierTests).
    public static let threshold = 0.5

    /// The class of a two-class score p(class 1). NaN is class 0, as argmax
    /// gave; eval and predict refuse non-finite probabilities before any use.
    public static func decide(score p: Double) -> Int { p > threshold ? 1 : 0 }

    /// The class of one image's probabilities: `decide(score: p[1])` for two
    /// classes; for more, the most probable, a tie to the lower index.
    public static func decide(_ p: [Float]) -> Int {
        if p.count == 2 { return decide(score: Double(p[1])) }
        return p.indices.max { p[$0] < p[$1] } ?? 0
    }

    /// What reports and ROC curves rank images by: p(class 1) for two classes,
    /// the top probability for more; NaN when any probability is not finite.
    public static func score(_ p: [Float]) -> Double {
        guard p.allSatisfy(\.isFinite), let top = p.max() else { return .nan }
        return Double(p.count == 2 ? p[1] : top)
    }

    // MARK: forward passes

    /// Softmax probabilities of each image of x (N, inChannels, size, size),
    /// normalised, with `tta` (nil: the classifier's). In eval mode; the
    /// network's mode is restored after (training evaluates between epochs).
    public func probabilities(_ x: Tensor, tta: TestTimeAugmentation? = nil) -> [[Float]] {
        let wasTraining = net.training
        net.setTraining(false)
        defer { net.setTraining(wasTraining) }
        return (tta ?? self.tta).probabilities(x, logits)
    }

    /// How the images of `dataset` become this network's input (its resolution,
    /// channels and normalisation), over the engine's threads; also training's
    /// batches, augmented.
    public func batchMaker(for dataset: Dataset) -> BatchMaker {
        var maker = BatchMaker(dataset: dataset, size: size, outChannels: inChannels, mean: mean.isEmpty ? nil : mean,
                               std: std.isEmpty ? nil : std)
        maker.threads = net.engine.threads
        maker.lungField = lungField
        return maker
    }

    /// An image as the network sees it before normalisation: gray (ITU-R 601
    /// luma), resized to size x size (`RasterImage.resized`: bilinear,
    /// antialiased). An image that already is one is returned as it is.
    public func input(_ image: RasterImage) -> RasterImage {
        image.converted(channels: 1).resized(width: size, height: size)
    }

    /// The normalised batch (images.count, inChannels, size, size) of `images`
    /// (each through `input`). Needs the configuration's mean and std.
    public func tensor(_ images: [RasterImage]) -> Tensor {
        let x = Tensor([images.count, inChannels, size, size])
        fill(x, images[...])
        return x
    }

    /// `tensor(images)` into x, on the calling thread.
    func fill(_ x: Tensor, _ images: ArraySlice<RasterImage>) {
        guard let maker = imageMaker else { preconditionFailure("a classifier of images needs the run's mean and std") }
        x.resize([images.count, inChannels, size, size])
        for (k, image) in images.enumerated() {
            input(image).pixels.withUnsafeBufferPointer { maker.fill(x, slot: k, bytes: $0.baseAddress!, aug: .identity) }
        }
        if lungField { maker.keepLungField(x) }
    }

    /// Probabilities of images of any size, gray or RGB, `batchSize` at a time: the next batch is resized and
    /// normalised on another thread while this one runs forward (BatchPrefetcher, as training's batches).
    public func probabilities(of images: [RasterImage], tta: TestTimeAugmentation? = nil) -> [[Float]] {
        var out: [[Float]] = []
        out.reserveCapacity(images.count)
        let starts = Array(stride(from: 0, to: images.count, by: batchSize))
        let batches = BatchPrefetcher()
        func prefetch(_ k: Int) {
            let part = images[starts[k]..<min(starts[k] + batchSize, images.count)]
            batches.start { [self] x in fill(x, part); return [] }
        }
        if !starts.isEmpty { prefetch(0) }
        for k in starts.indices {
            guard let (x, _) = try? batches.take() else { preconditionFailure("filling a batch of images does not throw") }
            if k + 1 < starts.count { prefetch(k + 1) }
            out += probabilities(x, tta: tta)
        }
        return out
    }
}

/// Test-time augmentation (`--tta`): what an image's probabilities average over.
public enum TestTimeAugmentation: String, Codable, CaseIterable, Sendable {
    case none, flip

    /// `probabilities(x, forward)` with `net`'s plain eval-mode forward.
    public func probabilities(_ net: ResNet, _ x: Tensor) -> [[Float]] { probabilities(x, net.forward) }

    /// Softmax probabilities of each image of x (N, C, H, W), averaged with its left-right mirror's for
    /// `.flip`; `forward` gives a batch's logits. `Classifier.probabilities` is the caller.
    public func probabilities(_ x: Tensor, _ forward: (Tensor) -> Tensor) -> [[Float]] {
        let plain = softmax(forward(x))
        guard self == .flip else { return plain }
        let mirror = Tensor(x.shape)
        let W = x.shape[3], rows = x.count / W
        for r in 0..<rows { for c in 0..<W { mirror.data[r * W + c] = x.data[r * W + W - 1 - c] } }
        let flipped = softmax(forward(mirror))
        return zip(plain, flipped).map { a, b in zip(a, b).map { ($0 + $1) / 2 } }
    }
}
