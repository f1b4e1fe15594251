@testable import DistTrain
import Foundation
import Net
import XCTest

/// The one inference path (issue 26): batches give each image the
/// probabilities it gets alone (to 1e-6; to the bit in batches of one, as
/// predict computed them before); and one decision rule, the same on
/// probabilities and on scores.
final class ClassifierTests: XCTestCase {
    /// A width-4 ResNet-18 with non-trivial BatchNorm statistics, for 32 px gray input.
    func classifier(batchSize: Int, precision: Precision = .fp32) -> (Classifier, TrainConfig) {
        var c = TrainConfig()
        c.imageSize = 32; c.width = 4; c.inChannels = 1; c.numClasses = 2; c.mean = [0.3]; c.std = [0.2]; c.precision = precision
        let net = ResNet(c.netConfig, engine: Engine(backend: .fromEnvironment(), precision: precision))
        net.initialize(seed: 7)
        var rng = SplitMix(3)
        for e in net.store.entries where e.name.hasSuffix("running_mean") || e.name.hasSuffix("running_var") {
            let v = (0..<e.count).map { _ in Float(rng.next() % 1000) / 1000 * 0.5 + (e.name.hasSuffix("var") ? 0.5 : -0.25) }
            net.store.write(e, v)
        }
        return (Classifier(net: net, config: c, batchSize: batchSize), c)
    }

    /// Images of other sizes and channels than the network's, as predict gets them.
    func images(_ n: Int) -> [RasterImage] {
        var rng = SplitMix(11)
        return (0..<n).map { k in
            let (w, h, ch) = [(32, 32, 1), (57, 41, 1), (70, 70, 3), (20, 24, 1)][k % 4]
            return RasterImage(width: w, height: h, channels: ch, pixels: (0..<(w * h * ch)).map { _ in UInt8(rng.next() % 256) })
        }
    }

    /// What predict computed before the Classifier, one image at a time.
    func oneAtATime(_ images: [RasterImage], _ cfg: TrainConfig, net: ResNet, tta: TestTimeAugmentation) -> [[Float]] {
        let S = cfg.imageSize
        let maker = BatchMaker(channels: 1, height: S, width: S, size: S, mean: cfg.mean, std: cfg.std, outChannels: cfg.inChannels)
        net.setTraining(false)
        defer { net.setTraining(true) }
        return images.map { image in
            let img = image.converted(channels: 1).resized(width: S, height: S)
            let x = Tensor([1, cfg.inChannels, S, S])
            img.pixels.withUnsafeBufferPointer { maker.fill(x, slot: 0, bytes: $0.baseAddress!, aug: .identity) }
            return tta.probabilities(net, x)[0]
        }
    }

    /// Batches of one are predict's per-image path before the Classifier, to the bit. Larger batches agree to
    /// 1e-6: all up to the pooled features is per image (BatchNorm in eval mode, pooling; oneDNN's convolutions
    /// gave the same bits at every batch size on Zen 4, the native ones group images into GEMM columns and
    /// round differently), but OpenBLAS computes a row of the head's (N, features) x (features, classes) GEMM
    /// with other edge kernels for N = 1 than inside a larger N: the logits differ in the last bits
    /// (probabilities by up to 2.1e-7 at width 64 on Zen 4; 0 in bf16, whose GEMM is our kernel).
    func checkBatchesMatchSingleImages(_ precision: Precision, file: StaticString = #filePath, line: UInt = #line) {
        let imgs = images(11)
        let (single, cfg) = classifier(batchSize: 1, precision: precision)
        for tta in TestTimeAugmentation.allCases {
            let before = oneAtATime(imgs, cfg, net: single.net, tta: tta)
            XCTAssertEqual(single.probabilities(of: imgs, tta: tta), before, "\(tta): batches of 1", file: file, line: line)
            for b in [4, 32] {
                let batched = Classifier(net: single.net, config: cfg, batchSize: b).probabilities(of: imgs, tta: tta)
                XCTAssertEqual(batched.count, imgs.count, file: file, line: line)
                for (p, q) in zip(batched, before) {
                    for k in 0..<2 { XCTAssertEqual(p[k], q[k], accuracy: 1e-6, "\(tta): batches of \(b)", file: file, line: line) }
                }
            }
        }
        XCTAssertTrue(single.net.training, "the network's mode is restored")
    }

    func testBatchesGiveEachImageItsSingleImageProbabilities() {
        checkBatchesMatchSingleImages(.fp32)
    }

    func testBatchesGiveEachImageItsSingleImageProbabilitiesInBF16() throws {
        try XCTSkipUnless(BF16.supported, "this CPU has no AVX512-BF16")
        checkBatchesMatchSingleImages(.bf16)
    }

    /// On softmax outputs, p1 > 0.5 is argmax with ties to class 0 (what eval and predict decided), but where
    /// p1 rounds to 0.5 and p0 to the Float below it: exact ties and logits one ulp apart at several magnitudes.
    func testTheThresholdIsArgmaxWithTiesToTheFirstClass() {
        var z: [(Float, Float)] = []
        for base: Float in [0, 1e-7, 0.3, -2, 17, 1e4] {
            var a = base
            for _ in 0..<40 { z.append((base, a)); z.append((a, base)); a = a.nextUp }
            a = base
            for _ in 0..<40 { z.append((base, a)); a = a.nextDown }
        }
        var rng = SplitMix(5)
        for _ in 0..<20_000 {
            let a = Float(Int(rng.next() % 2_000_001) - 1_000_000) * 1e-9
            z.append((a, a + Float(Int(rng.next() % 41) - 20) * 1e-8))
        }
        let logits = Tensor([z.count, 2], values: z.flatMap { [$0.0, $0.1] })
        var ties = 0, apart = 0
        for p in softmax(logits) {
            let argmax = p.indices.max { p[$0] < p[$1] }!
            if p[0] == p[1] { ties += 1 }
            if Classifier.decide(p) != argmax {
                apart += 1
                XCTAssertEqual([p[0], p[1]], [Float(0.5).nextDown, 0.5], "argmax and the threshold part only here")
            }
        }
        XCTAssertGreaterThan(ties, 0, "exact ties were checked")
        XCTAssertGreaterThan(apart, 0, "the one case where they part was reached")
        XCTAssertEqual(Classifier.decide([0.2, 0.4, 0.4]), 1, "more classes: argmax, a tie to the lower index")
        XCTAssertEqual(Classifier.decide([0.5, 0.2, 0.3]), 0)
        XCTAssertEqual(Classifier.decide([Float.nan, .nan]), 0, "NaN: class 0, as argmax gave")
    }

    /// One threshold: a score of exactly 0.5 is negative for the metrics, the intervals, calibration and McNemar alike.
    func testEveryFigureDecidesAtTheSameThreshold() {
        XCTAssertEqual(Classifier.decide(score: 0.5), 0)
        XCTAssertEqual(Classifier.decide(score: 0.5.nextUp), 1)
        XCTAssertEqual(Classifier.decide(score: .nan), 0)
        let labels = [0, 1, 1, 0], scores = [0.5, 0.5.nextUp, 0.9, 0.1]
        XCTAssertEqual(BinaryFigures(labels: labels, scores: scores).accuracy, 1)
        let m = SplitMetrics(lossSum: 0, labels: labels, predictions: scores.map(Classifier.decide(score:)), scores: scores, classes: 2)
        XCTAssertEqual(m.accuracy, 1)
        let e = RunEvidence(testLabels: labels, testScores: scores, valLabels: [], valScores: [], resamples: 10)
        XCTAssertEqual(e.figures.accuracy, 1)
        XCTAssertEqual(e.accuracyExact, Stats.clopperPearson(successes: 4, trials: 4))
        XCTAssertEqual(Calibration.bins(labels: labels, scores: scores).reduce(0) { $0 + ($1.count > 0 ? $1.accuracy * Double($1.count) : 0) }, 4)
        let paired = PairedComparison(nameA: "a", nameB: "b", labels: labels, scoresA: scores, scoresB: [0.6, 0.4, 0.9, 0.1], resamples: 10)
        XCTAssertEqual([paired.onlyA, paired.onlyB], [2, 0])
    }

    /// predict's --batch-size: the same rows (probabilities to 1e-6 and the 6 decimals' rounding) and the same
    /// CAMs (still one image at a time); a bad one is a usage error.
    func testPredictBatchSizeChangesNothing() throws {
        let run = makeTempDir("classifier-run"), data = preparedSyntheticSet("classifier-data", train: 8, val: 2, test: 6)
        let t = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval"], timeout: 120)
        XCTAssertEqual(t.status, 0, t.output)
        let ds = try Dataset(path: data)
        let names = try ds.filenames()
        let files = ds[split: .test].map { (data as NSString).deletingLastPathComponent + "/" + names[$0] }
        var rows: [[[String]]] = [], cams: [[Float]] = []
        for b in ["1", "4", "64"] {
            let out = run + "/pred-\(b)"
            let r = try runCommand([disttrainBinary, "predict"] + files + ["--run", run, "--out", out, "--cams", "gradcam", "--tta", "flip",
                                                                         "--batch-size", b, "--threads", "1"], timeout: 120)
            XCTAssertEqual(r.status, 0, r.output)
            rows.append(try CSV.read(out + "/predictions.csv").map(\.fields))
            cams.append(try HDF5File(out + "/cams.h5").readFloats("gradcam").values)
        }
        XCTAssertEqual(rows[0].count, files.count + 1)
        for other in 1..<3 {
            XCTAssertEqual(cams[other], cams[0])
            XCTAssertEqual(rows[other].map { [$0[0], $0[2]] }, rows[0].map { [$0[0], $0[2]] }, "files and predicted classes")
            for (a, b) in zip(rows[0].dropFirst(), rows[other].dropFirst()) {
                XCTAssertEqual(try XCTUnwrap(Double(a[1])), try XCTUnwrap(Double(b[1])), accuracy: 1.5e-6, a[0])
            }
        }
        let bad = try runCommand([disttrainBinary, "predict", files[0], "--run", run, "--batch-size", "0"])
        XCTAssertEqual(bad.status, 64, bad.output)
        XCTAssertTrue(bad.output.contains("--batch-size must be in 1...65536"), bad.output)
    }
}
