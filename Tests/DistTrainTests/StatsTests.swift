import DistTrain
import Foundation
import XCTest

/// Every statistic on a case with a known answer: scipy's (Tests/Fixtures/
/// make_stats_fixtures.py -> stats_expected.json) or one worked by hand.
final class StatsTests: XCTestCase {
    lazy var expected: [String: Any] = {
        let data = try! Data(contentsOf: URL(fileURLWithPath: packageRoot + "/Tests/Fixtures/stats_expected.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    func testClopperPearsonMatchesScipy() {
        for case let e as [String: Any] in expected["clopper_pearson"] as! [Any] {
            let k = e["k"] as! Int, n = e["n"] as! Int
            let ci = Stats.clopperPearson(successes: k, trials: n)
            XCTAssertEqual(ci.lower, e["lower"] as! Double, accuracy: 1e-9, "\(k)/\(n)")
            XCTAssertEqual(ci.upper, e["upper"] as! Double, accuracy: 1e-9, "\(k)/\(n)")
        }
    }

    func testMcNemarExactMatchesScipy() {
        for case let e as [String: Any] in expected["mcnemar"] as! [Any] {
            let b = e["b"] as! Int, c = e["c"] as! Int
            XCTAssertEqual(Stats.mcnemarExact(b: b, c: c), e["p"] as! Double, accuracy: 1e-12, "b \(b), c \(c)")
        }
        // By hand: 0 vs 5 discordant pairs, p = 2 / 2^5.
        XCTAssertEqual(Stats.mcnemarExact(b: 0, c: 5), 2.0 / 32, accuracy: 1e-15)
        XCTAssertEqual(Stats.mcnemarExact(b: 0, c: 0), 1)
    }

    /// A stratified bootstrap of accuracy approaches its exact distribution:
    /// (Bin(200, 0.95) + Bin(200, 0.92)) / 400 for this fixed sample.
    func testStratifiedBootstrapApproachesTheExactPercentiles() {
        let e = expected["bootstrap_accuracy"] as! [String: Any]
        var labels: [Int] = [], scores: [Double] = []
        for (cls, n, right) in [(0, e["n0"] as! Int, e["right0"] as! Int), (1, e["n1"] as! Int, e["right1"] as! Int)] {
            for i in 0..<n {
                labels.append(cls)
                let correct = i < right
                scores.append((cls == 1) == correct ? 0.9 : 0.1)
            }
        }
        XCTAssertEqual(BinaryFigures(labels: labels, scores: scores).accuracy, 374.0 / 400)
        let ci = Stats.bootstrapIntervals(labels: labels, scores: scores, resamples: 20_000, seed: 7)["accuracy"]!
        XCTAssertEqual(ci.lower, e["lower"] as! Double, accuracy: 0.003)
        XCTAssertEqual(ci.upper, e["upper"] as! Double, accuracy: 0.003)
        // Stratified: every resample keeps 200 of each class.
        for d in Stats.stratifiedResamples(labels: labels, count: 5, seed: 1) {
            XCTAssertEqual(d.filter { labels[$0] == 1 }.count, 200)
        }
        XCTAssertEqual(Stats.stratifiedResamples(labels: labels, count: 3, seed: 9),
                       Stats.stratifiedResamples(labels: labels, count: 3, seed: 9))
    }

    func testAUCMatchesMannWhitney() {
        let e = expected["auc"] as! [String: Any]
        let f = BinaryFigures(labels: e["labels"] as! [Int], scores: e["scores"] as! [Double])
        XCTAssertEqual(f.auc, e["auc"] as! Double, accuracy: 1e-12)
    }

    /// Two identical models differ by exactly 0 on every resample; a model
    /// that is right on 10 more images of 100 differs by 0.1.
    func testPairedDifference() {
        let labels = (0..<100).map { $0 % 2 }
        let a = labels.enumerated().map { i, y in i < 20 ? (y == 1 ? 0.2 : 0.8) : (y == 1 ? 0.9 : 0.1) }  // 20 wrong
        let b = labels.enumerated().map { i, y in i < 10 ? (y == 1 ? 0.2 : 0.8) : (y == 1 ? 0.9 : 0.1) }  // 10 wrong
        let same = Stats.pairedDifference("accuracy", labels: labels, scoresA: a, scoresB: a)
        XCTAssertEqual(same.difference, 0)
        XCTAssertEqual(same.interval.lower, 0)
        XCTAssertEqual(same.interval.upper, 0)
        let d = Stats.pairedDifference("accuracy", labels: labels, scoresA: a, scoresB: b, resamples: 4000)
        XCTAssertEqual(d.difference, 0.1, accuracy: 1e-12)
        XCTAssertTrue(d.interval.contains(0.1) && d.interval.lower > 0.02 && d.interval.upper < 0.18, "\(d.interval)")
    }

    /// The mean over models on resampled images: one model gives its own bootstrap interval (the same draws); the
    /// mean of two differs from each, lies between them, and two groups with the same models differ by 0 on every draw.
    func testResampledMeanOfModels() {
        let labels = (0..<100).map { $0 % 2 }
        let a = labels.enumerated().map { i, y in i < 20 ? (y == 1 ? 0.2 : 0.8) : (y == 1 ? 0.9 : 0.1) }  // 20 wrong
        let b = labels.enumerated().map { i, y in i >= 90 ? (y == 1 ? 0.2 : 0.8) : (y == 1 ? 0.7 : 0.3) }  // 10 wrong
        let one = Stats.resampledMean("accuracy", labels: labels, models: [a], resamples: 500, seed: 3)
        let own = Stats.bootstrapIntervals(labels: labels, scores: a, resamples: 500, seed: 3)["accuracy"]!
        XCTAssertEqual(one.mean, 0.8, accuracy: 1e-12)
        XCTAssertEqual([one.interval.lower, one.interval.upper], [own.lower, own.upper])
        let two = Stats.resampledMean("accuracy", labels: labels, models: [a, b], resamples: 500, seed: 3)
        XCTAssertEqual(two.mean, 0.85, accuracy: 1e-12)
        XCTAssertTrue(two.interval.contains(0.85) && two.interval.upper - two.interval.lower < own.upper - own.lower + 0.05,
                      "\(two.interval)")
        let swapped = Stats.pairedMeanDifference("accuracy", labels: labels, modelsA: [a, b], modelsB: [b, a], resamples: 200)
        XCTAssertEqual(swapped.difference, 0)
        XCTAssertEqual([swapped.interval.lower, swapped.interval.upper], [0, 0])
        let d = Stats.pairedMeanDifference("accuracy", labels: labels, modelsA: [a, a], modelsB: [b, a], resamples: 2000)
        XCTAssertEqual(d.difference, 0.05, accuracy: 1e-12)
        XCTAssertTrue(d.interval.contains(0.05) && d.interval.lower < 0.05 && d.interval.upper > 0.05, "\(d.interval)")
    }

    func testPercentileIntervalInterpolatesAsNumpy() {
        // numpy.percentile([1..5], [2.5, 97.5]) = 1.1, 4.9
        let ci = Stats.percentileInterval([5, 3, 1, 4, 2])
        XCTAssertEqual(ci.lower, 1.1, accuracy: 1e-12)
        XCTAssertEqual(ci.upper, 4.9, accuracy: 1e-12)
    }

    func testMeanAndSampleSD() {
        let (m, sd) = Stats.meanSD([0.96, 0.97, 0.98])
        XCTAssertEqual(m, 0.97, accuracy: 1e-12)
        XCTAssertEqual(sd, 0.01, accuracy: 1e-12)
        XCTAssertTrue(Stats.meanSD([1]).sd.isNaN)
    }

    /// ECE of a known histogram: 10 images at confidence 0.9 of which 7 are
    /// right (|0.7 - 0.9| = 0.2), 10 at 0.6 of which 6 are right (0): ECE 0.1.
    func testExpectedCalibrationErrorOfAKnownHistogram() {
        var labels: [Int] = [], scores: [Double] = []
        for i in 0..<10 { labels.append(1); scores.append(i < 7 ? 0.9 : 0.1 + 0.0) }
        // the 3 wrong ones of the first group: label 1 with p = 0.1 has confidence 0.9 and is wrong
        for i in 0..<10 { labels.append(0); scores.append(i < 6 ? 0.4 : 0.6) }
        XCTAssertEqual(Calibration.expectedCalibrationError(labels: labels, scores: scores), 0.1, accuracy: 1e-12)
        let bins = Calibration.bins(labels: labels, scores: scores)
        XCTAssertEqual(bins.count, 15)
        XCTAssertEqual(bins.map(\.count).reduce(0, +), 20)
        XCTAssertEqual(bins.first { $0.count == 10 && $0.meanConfidence > 0.85 }?.accuracy ?? -1, 0.7, accuracy: 1e-12)
    }

    /// Labels drawn from sigmoid(z / 2): fitting on the logits z recovers T = 2,
    /// and scaling lowers the NLL and the ECE without changing a prediction.
    func testTemperatureScalingRecoversTheGeneratingTemperature() {
        var rng = SplitMix(11)
        var labels: [Int] = [], scores: [Double] = []
        for _ in 0..<20_000 {
            let z = (Double(rng.next() % 10_000) / 10_000 - 0.5) * 16
            let p = 1 / (1 + exp(-z / 2))
            labels.append(Double(rng.next() % 1_000_000) / 1_000_000 < p ? 1 : 0)
            scores.append(1 / (1 + exp(-z)))  // overconfident: temperature 1 on z
        }
        let t = Calibration.fitTemperature(labels: labels, scores: scores)
        XCTAssertEqual(t, 2, accuracy: 0.15)
        let scaled = scores.map { Calibration.scaled($0, temperature: t) }
        XCTAssertLessThan(Calibration.nll(labels: labels, scores: scores, temperature: t),
                          Calibration.nll(labels: labels, scores: scores, temperature: 1))
        XCTAssertLessThan(Calibration.expectedCalibrationError(labels: labels, scores: scaled),
                          Calibration.expectedCalibrationError(labels: labels, scores: scores))
        XCTAssertEqual(zip(scores, scaled).filter { ($0 > 0.5) != ($1 > 0.5) }.count, 0)
    }
}
