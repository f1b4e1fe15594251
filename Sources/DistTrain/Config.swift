import Foundation
import Net

public enum Method: String, Codable, CaseIterable, Sendable { case scratch, transfer }

/// The full resolved configuration of a run, saved as `config.json` so that
/// `resume` needs no flags.
public struct TrainConfig: Codable, Sendable, Equatable {
    public var method: Method = .scratch
    public var arch: Arch = .resnet18
    /// What the user gave: a source folder or a prepared .h5.
    public var data: String = ""
    /// The prepared .h5 actually read.
    public var dataset: String = ""
    public var epochs: Int = 20
    /// Global batch, split evenly over ranks.
    public var batchSize: Int = 32
    public var lr: Double = 0.02
    public var optimizer: OptimizerKind = .sgd
    public var momentum: Double = 0.9
    public var weightDecay: Double = 1e-4
    public var schedule: ScheduleKind = .cosine
    public var warmupEpochs: Double = 1
    public var imageSize: Int = 224
    public var seed: UInt64 = 0
    public var run: String = ""
    public var labelSmoothing: Double = 0
    public var augment: Bool = true
    public var keepCheckpoints: Int = 3
    public var evalBatchSize: Int = 32
    public var width: Int = 64
    /// Filled from the data set.
    public var inChannels: Int = 1
    public var numClasses: Int = 2
    public var classNames: [String] = []
    public var mean: [Double] = []
    public var std: [Double] = []
    public var datasetFingerprint: String = ""
    /// Transfer learning: the source checkpoint (HDF5, torchvision keys).
    public var pretrained: String = ""
    /// Epochs training the new head alone (backbone and its BN frozen).
    public var freezeEpochs: Int = 0
    /// Learning-rate multiplier of the backbone once it trains.
    public var backboneLRScale: Double = 0.1
    /// How an RGB source's conv1 meets gray images: `sum` over its input
    /// channels (1-channel network) or `replicate` the gray channel 3 times.
    public var adaptConv1: String = "sum"
    /// BatchNorm uses (and keeps) its running statistics while training: the
    /// per-rank batch statistics then play no part, so 2 ranks and 1 process
    /// compute the same step (the equivalence test uses it).
    public var frozenBatchNormStatistics: Bool = false
    /// Stop after this many epochs of this invocation (tests, time-boxed runs); 0 = no limit.
    public var stopAfterEpochs: Int = 0

    public init() {}

    enum CodingKeys: String, CodingKey { case method, arch, data, dataset, epochs, batchSize, lr, optimizer, momentum, weightDecay, schedule, warmupEpochs, imageSize, seed, run, labelSmoothing, augment, keepCheckpoints, evalBatchSize, width, inChannels, numClasses, classNames, mean, std, datasetFingerprint, pretrained, freezeEpochs, backboneLRScale, adaptConv1, frozenBatchNormStatistics, stopAfterEpochs }

    /// Every key optional: a config.json from an older disttrain still loads,
    /// with the defaults for what it lacks.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let v = try c.decodeIfPresent(type(of: method).self, forKey: .method) { method = v }
        if let v = try c.decodeIfPresent(type(of: arch).self, forKey: .arch) { arch = v }
        if let v = try c.decodeIfPresent(type(of: data).self, forKey: .data) { data = v }
        if let v = try c.decodeIfPresent(type(of: dataset).self, forKey: .dataset) { dataset = v }
        if let v = try c.decodeIfPresent(type(of: epochs).self, forKey: .epochs) { epochs = v }
        if let v = try c.decodeIfPresent(type(of: batchSize).self, forKey: .batchSize) { batchSize = v }
        if let v = try c.decodeIfPresent(type(of: lr).self, forKey: .lr) { lr = v }
        if let v = try c.decodeIfPresent(type(of: optimizer).self, forKey: .optimizer) { optimizer = v }
        if let v = try c.decodeIfPresent(type(of: momentum).self, forKey: .momentum) { momentum = v }
        if let v = try c.decodeIfPresent(type(of: weightDecay).self, forKey: .weightDecay) { weightDecay = v }
        if let v = try c.decodeIfPresent(type(of: schedule).self, forKey: .schedule) { schedule = v }
        if let v = try c.decodeIfPresent(type(of: warmupEpochs).self, forKey: .warmupEpochs) { warmupEpochs = v }
        if let v = try c.decodeIfPresent(type(of: imageSize).self, forKey: .imageSize) { imageSize = v }
        if let v = try c.decodeIfPresent(type(of: seed).self, forKey: .seed) { seed = v }
        if let v = try c.decodeIfPresent(type(of: run).self, forKey: .run) { run = v }
        if let v = try c.decodeIfPresent(type(of: labelSmoothing).self, forKey: .labelSmoothing) { labelSmoothing = v }
        if let v = try c.decodeIfPresent(type(of: augment).self, forKey: .augment) { augment = v }
        if let v = try c.decodeIfPresent(type(of: keepCheckpoints).self, forKey: .keepCheckpoints) { keepCheckpoints = v }
        if let v = try c.decodeIfPresent(type(of: evalBatchSize).self, forKey: .evalBatchSize) { evalBatchSize = v }
        if let v = try c.decodeIfPresent(type(of: width).self, forKey: .width) { width = v }
        if let v = try c.decodeIfPresent(type(of: inChannels).self, forKey: .inChannels) { inChannels = v }
        if let v = try c.decodeIfPresent(type(of: numClasses).self, forKey: .numClasses) { numClasses = v }
        if let v = try c.decodeIfPresent(type(of: classNames).self, forKey: .classNames) { classNames = v }
        if let v = try c.decodeIfPresent(type(of: mean).self, forKey: .mean) { mean = v }
        if let v = try c.decodeIfPresent(type(of: std).self, forKey: .std) { std = v }
        if let v = try c.decodeIfPresent(type(of: datasetFingerprint).self, forKey: .datasetFingerprint) { datasetFingerprint = v }
        if let v = try c.decodeIfPresent(type(of: pretrained).self, forKey: .pretrained) { pretrained = v }
        if let v = try c.decodeIfPresent(type(of: freezeEpochs).self, forKey: .freezeEpochs) { freezeEpochs = v }
        if let v = try c.decodeIfPresent(type(of: backboneLRScale).self, forKey: .backboneLRScale) { backboneLRScale = v }
        if let v = try c.decodeIfPresent(type(of: adaptConv1).self, forKey: .adaptConv1) { adaptConv1 = v }
        if let v = try c.decodeIfPresent(type(of: frozenBatchNormStatistics).self, forKey: .frozenBatchNormStatistics) { frozenBatchNormStatistics = v }
        if let v = try c.decodeIfPresent(type(of: stopAfterEpochs).self, forKey: .stopAfterEpochs) { stopAfterEpochs = v }
    }

    public var netConfig: ResNetConfig {
        ResNetConfig(arch: arch, inChannels: inChannels, numClasses: numClasses, width: width)
    }

    public func save(to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    public static func load(_ path: String) throws -> TrainConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RuntimeError("no config at '\(path)' (is this a run folder?)")
        }
        do { return try JSONDecoder().decode(TrainConfig.self, from: data) } catch {
            throw RuntimeError("'\(path)' is not a valid disttrain config: \(error)")
        }
    }
}
