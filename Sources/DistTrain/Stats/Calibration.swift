import Foundation

/// Do the probabilities mean what they say? Expected calibration error and the
/// reliability diagram (Guo et al. 2017, "On Calibration of Modern Neural
/// Networks", eq. 3), and temperature scaling fitted on the validation split.
/// Binary: the confidence of an image is max(p, 1 - p), its prediction `Classifier.decide(score: p)`.
public enum Calibration {
    /// One bin of the reliability diagram: confidences in (lower, upper].
    public struct Bin: Codable, Sendable, Equatable {
        public var lower: Double, upper: Double
        public var count: Int
        public var meanConfidence: Double, accuracy: Double
    }

    public static func bins(labels: [Int], scores: [Double], count binCount: Int = 15) -> [Bin] {
        var n = [Int](repeating: 0, count: binCount), conf = [Double](repeating: 0, count: binCount)
        var right = [Double](repeating: 0, count: binCount)
        for (y, p) in zip(labels, scores) {
            // A NaN or infinite score belongs in no bin, and one past 1 goes in the top bin: Int() of
            // NaN or 1e300 traps. eval refuses non-finite probabilities before this.
            guard p.isFinite else { continue }
            let c = max(p, 1 - p)
            let m = min(max(Int((min(c, 1) * Double(binCount)).rounded(.up)) - 1, 0), binCount - 1)
            n[m] += 1; conf[m] += c
            if Classifier.decide(score: p) == y { right[m] += 1 }
        }
        return (0..<binCount).map { m in
            Bin(lower: Double(m) / Double(binCount), upper: Double(m + 1) / Double(binCount), count: n[m],
                meanConfidence: n[m] > 0 ? conf[m] / Double(n[m]) : .nan, accuracy: n[m] > 0 ? right[m] / Double(n[m]) : .nan)
        }
    }

    /// ECE = sum over bins of |B|/n * |accuracy(B) - confidence(B)|.
    public static func expectedCalibrationError(labels: [Int], scores: [Double], bins binCount: Int = 15) -> Double {
        guard !labels.isEmpty else { return .nan }
        return bins(labels: labels, scores: scores, count: binCount).filter { $0.count > 0 }.reduce(0) {
            $0 + Double($1.count) / Double(labels.count) * abs($1.accuracy - $1.meanConfidence)
        }
    }

    /// p of class 1 with the logit divided by `temperature` (for two classes the
    /// softmax temperature acts on z1 - z0 = logit(p)).
    public static func scaled(_ p: Double, temperature t: Double) -> Double {
        let q = min(max(p, 1e-7), 1 - 1e-7)
        return 1 / (1 + exp(-log(q / (1 - q)) / t))
    }

    /// Mean negative log-likelihood of the labels under the scaled probabilities.
    public static func nll(labels: [Int], scores: [Double], temperature t: Double) -> Double {
        zip(labels, scores).reduce(0) { acc, ys in
            let p = min(max(scaled(ys.1, temperature: t), 1e-12), 1 - 1e-12)
            return acc - (ys.0 == 1 ? log(p) : log(1 - p))
        } / Double(max(labels.count, 1))
    }

    /// The temperature in [0.05, 20] minimising the NLL (golden-section search
    /// on log T; the NLL is convex in 1/T). Fit it on validation, apply it to test.
    public static func fitTemperature(labels: [Int], scores: [Double]) -> Double {
        var a = log(0.05), b = log(20.0)
        let g = (5.0.squareRoot() - 1) / 2
        var c = b - g * (b - a), d = a + g * (b - a)
        func f(_ x: Double) -> Double { nll(labels: labels, scores: scores, temperature: exp(x)) }
        var fc = f(c), fd = f(d)
        for _ in 0..<100 {
            if fc < fd {
                b = d; d = c; fd = fc; c = b - g * (b - a); fc = f(c)
            } else {
                a = c; c = d; fc = fd; d = a + g * (b - a); fd = f(d)
            }
        }
        return exp((a + b) / 2)
    }
}
