@testable import DistTrain
import Foundation
import Net
import XCTest

final class DatasetTests: XCTestCase {
    func testPrepareFromCSVSplits() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("csv"), train: 6, val: 2, test: 4, size: 20)
        let out = dir + "/data.h5"
        try DatasetSource.detect(dir).prepare(out: out)
        let ds = try Dataset(path: out)
        XCTAssertEqual([ds.count, ds.channels, ds.height, ds.width], [12, 1, 20, 20])
        XCTAssertEqual(ds.classNames, ["NORMAL", "COVID"])
        XCTAssertEqual(ds.splits["train"]!.count, 6)
        XCTAssertEqual(ds.splits["val"]!.count, 2)
        XCTAssertEqual(ds.splits["test"]!.count, 4)
        XCTAssertEqual(ds.labels, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
        // Pixels come back exactly, for any selection of rows.
        let names = try ds.filenames()
        let img = try RasterImage.read(dir + "/" + names[7])
        XCTAssertEqual(try ds.readImages([7]), img.pixels)
        XCTAssertEqual(try ds.readImages([3, 7]).suffix(400), img.pixels[...])
        // Train statistics in [0, 1] units.
        var sum = 0.0
        for i in ds.splits["train"]! { sum += try ds.readImages([i]).reduce(0.0) { $0 + Double($1) / 255 } }
        XCTAssertEqual(ds.mean[0], sum / (6 * 400), accuracy: 1e-9)
    }

    func testPrepareResizesAndConvertsChannels() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("resize"), train: 2, val: 0, test: 0, size: 40)
        let out = dir + "/data.h5"
        try DatasetSource.detect(dir).prepare(out: out, size: 16, channels: 3)
        let ds = try Dataset(path: out)
        XCTAssertEqual([ds.channels, ds.height, ds.width], [3, 16, 16])
        let px = try ds.readImages([0])
        XCTAssertEqual(Array(px[0..<256]), Array(px[256..<512]), "gray replicated into R, G, B")
    }

    func testErrorsNameFileAndLine() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("errors"), train: 4, val: 0, test: 0, size: 16)
        try "filename,label\nNORMAL/img (0).png,0.0\nCOVID/missing.png,1.0\n".write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DatasetSource.detect(dir).prepare(out: dir + "/x.h5")) {
            XCTAssertTrue("\($0)".contains("train.csv line 3: image 'COVID/missing.png' not found"), "\($0)")
        }
        try "filename,label\nNORMAL/img (0).png,zero\n".write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DatasetSource.detect(dir).prepare(out: dir + "/x.h5")) {
            XCTAssertTrue("\($0)".contains("train.csv line 2: bad label 'zero'"), "\($0)")
        }
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: dir + "/NORMAL/img (0).png"))
        try "filename,label\nNORMAL/img (0).png,0\n".write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DatasetSource.detect(dir).prepare(out: dir + "/x.h5")) {
            XCTAssertTrue("\($0)".contains("img (0).png"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.h5"), "no half-written data set")
    }

    /// A few real files of the shared data sets, when present: 8-bit gray PNG and RGB JPEG.
    func testReadsRealPNGAndJPEG() throws {
        let ct = packageRoot + "/../shared/data/sars-cov-2-ct-224/COVID/Covid (1).png"
        let cifar = packageRoot + "/../shared/data/cifar-10/train/cat"
        guard FileManager.default.fileExists(atPath: ct), let cat = try? FileManager.default.contentsOfDirectory(atPath: cifar).first else {
            throw XCTSkip("shared data sets not present")
        }
        let a = try RasterImage.read(ct)
        XCTAssertEqual([a.width, a.height, a.channels], [224, 224, 1])
        let b = try RasterImage.read(cifar + "/" + cat)
        XCTAssertEqual([b.width, b.height, b.channels], [32, 32, 3])
        XCTAssertGreaterThan(Set(b.pixels).count, 20)
    }

    func testShardSamplerCoversEachGlobalBatchOnce() {
        let count = 103, batch = 12
        let samplers = (0..<4).map { ShardSampler(count: count, batchSize: batch, rank: $0, size: 4, seed: 9) }
        XCTAssertEqual(Set(samplers.map(\.stepsPerEpoch)), [8])
        let perm = samplers[0].permutation(epoch: 3)
        XCTAssertEqual(perm, samplers[2].permutation(epoch: 3), "every rank draws the same permutation")
        XCTAssertNotEqual(perm, samplers[0].permutation(epoch: 4))
        XCTAssertEqual(perm.sorted(), Array(0..<count))
        for step in 0..<8 {
            let parts = samplers.map { $0.localIndices(epoch: 3, step: step, permutation: perm) }
            XCTAssertEqual(parts.flatMap { $0 }, Array(perm[(step * batch)..<((step + 1) * batch)]))
        }
    }

    func testAugmentationIsDeterministicAndIdentityCopies() throws {
        XCTAssertEqual(Augmentation.random(seed: 1, epoch: 2, index: 3), Augmentation.random(seed: 1, epoch: 2, index: 3))
        XCTAssertNotEqual(Augmentation.random(seed: 1, epoch: 2, index: 3), Augmentation.random(seed: 1, epoch: 3, index: 3))
        let maker = BatchMaker(channels: 1, height: 4, width: 4, size: 4, mean: [0.5], std: [0.25])
        let px: [UInt8] = (0..<16).map { UInt8($0 * 16) }
        let t = Tensor([1, 1, 4, 4])
        px.withUnsafeBufferPointer { maker.fill(t, slot: 0, bytes: $0.baseAddress!, aug: .identity) }
        for i in 0..<16 { XCTAssertEqual(t[i], (Float(px[i]) / 255 - 0.5) / 0.25, accuracy: 1e-6) }
        var flip = Augmentation.identity
        flip.flip = true
        px.withUnsafeBufferPointer { maker.fill(t, slot: 0, bytes: $0.baseAddress!, aug: flip) }
        XCTAssertEqual(t[0], (Float(px[3]) / 255 - 0.5) / 0.25, accuracy: 1e-5, "a flip mirrors columns")
    }

    /// The background loader hands over the same batches, in order, as making
    /// them on the spot; the two buffers alternate; a failed batch rethrows at take().
    func testPrefetcherMatchesSynchronousBatches() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("prefetch"), train: 8, val: 2, test: 2, size: 20)
        try DatasetSource.detect(dir).prepare(out: dir + "/data.h5")
        let ds = try Dataset(path: dir + "/data.h5")
        let maker = BatchMaker(dataset: ds, size: 16)
        let batches = BatchPrefetcher()
        let groups = [[0, 1, 2], [3, 4, 5], [6, 7, 1]]
        batches.start { try maker.batch(ds, groups[0], into: $0, seed: 9, augmentEpoch: 2, parallel: false) }
        var seen: [ObjectIdentifier] = []
        for (i, g) in groups.enumerated() {
            let (x, labels) = try batches.take()
            if i + 1 < groups.count {
                let next = groups[i + 1]
                batches.start { try maker.batch(ds, next, into: $0, seed: 9, augmentEpoch: 2, parallel: false) }
            }
            let ref = Tensor()
            let refLabels = try maker.batch(ds, g, into: ref, seed: 9, augmentEpoch: 2)
            XCTAssertEqual(labels, refLabels)
            XCTAssertEqual(x.array, ref.array, "batch \(i)")
            seen.append(ObjectIdentifier(x))
        }
        XCTAssertEqual(seen[0], seen[2])
        XCTAssertNotEqual(seen[0], seen[1])
        batches.start { _ in throw RuntimeError("unreadable image 7") }
        XCTAssertThrowsError(try batches.take()) { XCTAssertTrue("\($0)".contains("unreadable image 7")) }
    }

    func testRocAUC() {
        XCTAssertEqual(SplitMetrics.rocAUC(labels: [0, 0, 1, 1], scores: [0.1, 0.4, 0.35, 0.8]), 0.75)
        XCTAssertEqual(SplitMetrics.rocAUC(labels: [0, 1], scores: [0.5, 0.5]), 0.5)
        let m = SplitMetrics(lossSum: 2, labels: [0, 0, 1, 1], predictions: [0, 1, 1, 1], scores: [0.1, 0.6, 0.7, 0.9], classes: 2)
        XCTAssertEqual(m.accuracy, 0.75); XCTAssertEqual(m.sensitivity, 1); XCTAssertEqual(m.specificity, 0.5)
        XCTAssertEqual(m.precision, 2.0 / 3); XCTAssertEqual(m.confusion, [[1, 1], [0, 2]])
    }
}
