import Foundation
import Net

// How sure we are: confidence intervals for a classifier's figures on a
// finite test set, and the paired comparison of two classifiers on the same
// images. Pure functions of labels and scores (p of class 1); no files.

/// A two-sided interval at `level` (0.95: the 2.5 % and 97.5 % points).
public struct Interval: Codable, Sendable, Equatable {
    public var lower: Double
    public var upper: Double
    public var level: Double
    public init(lower: Double, upper: Double, level: Double) { self.lower = lower; self.upper = upper; self.level = level }
    public var width: Double { upper - lower }
    public func contains(_ v: Double) -> Bool { v >= lower && v <= upper }
}

/// The figures of a binary classifier at `Classifier.threshold` (class 1 when
/// p > 0.5), for resampled test sets.
public struct BinaryFigures: Codable, Sendable, Equatable {
    public var accuracy = Double.nan, sensitivity = Double.nan, specificity = Double.nan
    public var precision = Double.nan, f1 = Double.nan, auc = Double.nan

    public static let names = ["accuracy", "sensitivity", "specificity", "precision", "f1", "auc"]

    public init() {}

    public init(labels: [Int], scores: [Double]) {
        guard !labels.isEmpty else { self.init(); return }
        var tp = 0.0, tn = 0.0, fp = 0.0, fn = 0.0
        for (y, p) in zip(labels, scores) {
            let predicted = Classifier.decide(score: p)
            switch (y, predicted) {
            case (1, 1): tp += 1
            case (0, 0): tn += 1
            case (0, 1): fp += 1
            default: fn += 1
            }
        }
        self.init(tp: tp, tn: tn, fp: fp, fn: fn, auc: SplitMetrics.rocAUC(labels: labels, scores: scores))
    }

    /// From the confusion counts (class 1 positive); undefined rates are NaN.
    public init(tp: Double, tn: Double, fp: Double, fn: Double, auc: Double) {
        accuracy = tp + tn + fp + fn > 0 ? (tp + tn) / (tp + tn + fp + fn) : .nan
        sensitivity = tp + fn > 0 ? tp / (tp + fn) : .nan
        specificity = tn + fp > 0 ? tn / (tn + fp) : .nan
        precision = tp + fp > 0 ? tp / (tp + fp) : .nan
        f1 = precision.isNaN || sensitivity.isNaN || precision + sensitivity == 0 ? .nan
            : 2 * precision * sensitivity / (precision + sensitivity)
        self.auc = auc
    }

    public subscript(name: String) -> Double {
        switch name {
        case "accuracy": return accuracy
        case "sensitivity": return sensitivity
        case "specificity": return specificity
        case "precision": return precision
        case "f1": return f1
        default: return auc
        }
    }
}

public enum Stats {
    // MARK: bootstrap

    /// Stratified bootstrap resamples: each resample draws, with replacement,
    /// as many images of each class as the set has, so every resample keeps the
    /// class balance (and AUC, sensitivity, specificity stay defined). Seeded:
    /// the same seed gives the same resamples, so two models compared on one
    /// set see the same draws (the paired bootstrap).
    public static func stratifiedResamples(labels: [Int], count: Int, seed: UInt64) -> [[Int]] {
        var byClass: [Int: [Int]] = [:]
        for (i, y) in labels.enumerated() { byClass[y, default: []].append(i) }
        let classes = byClass.keys.sorted()
        var rng = Xoshiro256(seed: seed)
        return (0..<count).map { _ in
            var draw: [Int] = []
            draw.reserveCapacity(labels.count)
            for k in classes {
                let members = byClass[k]!
                for _ in 0..<members.count { draw.append(members[Int(rng.next() % UInt64(members.count))]) }
            }
            return draw
        }
    }

    /// Cluster bootstrap resamples for correlated images: whole groups (patients) are drawn with replacement,
    /// stratified by the group's class (its most frequent label) so that both classes stay in every resample,
    /// and each draw is the images of the drawn groups. Slices of one patient move together, so the interval
    /// reflects how many patients the figure rests on, not how many slices. Seeded like `stratifiedResamples`.
    public static func groupResamples(labels: [Int], groups: [String], count: Int, seed: UInt64) -> [[Int]] {
        precondition(labels.count == groups.count)
        var members: [String: [Int]] = [:], order: [String] = []
        for (i, g) in groups.enumerated() {
            if members[g] == nil { order.append(g) }
            members[g, default: []].append(i)
        }
        var byClass: [Int: [String]] = [:]
        for g in order {
            var n: [Int: Int] = [:]
            for i in members[g]! { n[labels[i], default: 0] += 1 }
            byClass[n.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!.key, default: []].append(g)
        }
        var rng = Xoshiro256(seed: seed)
        return (0..<count).map { _ in
            var draw: [Int] = []
            for k in byClass.keys.sorted() {
                let gs = byClass[k]!
                for _ in 0..<gs.count { draw += members[gs[Int(rng.next() % UInt64(gs.count))]]! }
            }
            return draw
        }
    }

    /// The `level` percentile interval of `values` (NaNs dropped), linear
    /// interpolation between order statistics (numpy's default).
    public static func percentileInterval(_ values: [Double], level: Double = 0.95) -> Interval {
        let v = values.filter { !$0.isNaN }.sorted()
        guard !v.isEmpty else { return Interval(lower: .nan, upper: .nan, level: level) }
        func q(_ p: Double) -> Double {
            let h = p * Double(v.count - 1), lo = Int(h.rounded(.down)), hi = min(lo + 1, v.count - 1)
            return v[lo] + (h - Double(lo)) * (v[hi] - v[lo])
        }
        return Interval(lower: q((1 - level) / 2), upper: q(1 - (1 - level) / 2), level: level)
    }

    /// 95 % (or `level`) stratified-bootstrap intervals of every figure in `BinaryFigures`.
    public static func bootstrapIntervals(labels: [Int], scores: [Double], resamples: Int = 2000, seed: UInt64 = 0,
                                          level: Double = 0.95) -> [String: Interval] {
        let draws = stratifiedResamples(labels: labels, count: resamples, seed: seed)
        let figures = draws.map { d in BinaryFigures(labels: d.map { labels[$0] }, scores: d.map { scores[$0] }) }
        var out: [String: Interval] = [:]
        for name in BinaryFigures.names { out[name] = percentileInterval(figures.map { $0[name] }, level: level) }
        return out
    }

    /// The paired-bootstrap interval of figure(B) - figure(A) on the same images:
    /// both models scored on the same resamples.
    public static func pairedDifference(_ name: String, labels: [Int], scoresA: [Double], scoresB: [Double],
                                        resamples: Int = 2000, seed: UInt64 = 0,
                                        level: Double = 0.95) -> (difference: Double, interval: Interval) {
        pairedMeanDifference(name, labels: labels, modelsA: [scoresA], modelsB: [scoresB], resamples: resamples, seed: seed, level: level)
    }

    /// The mean of figure `name` over several models (each one's scores on the same images) and its interval from
    /// resampling the images, every model scored on the same draws: the test set's sampling error of the mean.
    /// (The spread across the models, e.g. seeds, is their sd; three seeds are too few for an interval of their own.)
    public static func resampledMean(_ name: String, labels: [Int], models: [[Double]], resamples: Int = 2000, seed: UInt64 = 0,
                                     level: Double = 0.95) -> (mean: Double, interval: Interval) {
        resampled(labels: labels, resamples: resamples, seed: seed, level: level) { meanFigure(name, labels, models, $0) }
    }

    /// mean(B) - mean(A) of figure `name` over two groups of models on the same images, with the paired interval
    /// (all models scored on the same draws).
    public static func pairedMeanDifference(_ name: String, labels: [Int], modelsA: [[Double]], modelsB: [[Double]],
                                            resamples: Int = 2000, seed: UInt64 = 0,
                                            level: Double = 0.95) -> (difference: Double, interval: Interval) {
        resampled(labels: labels, resamples: resamples, seed: seed, level: level) {
            meanFigure(name, labels, modelsB, $0) - meanFigure(name, labels, modelsA, $0)
        }
    }

    /// statistic(every image) and the `level` percentile interval of statistic(draw) over stratified draws.
    static func resampled(labels: [Int], resamples: Int, seed: UInt64, level: Double,
                          _ statistic: ([Int]) -> Double) -> (Double, Interval) {
        let draws = stratifiedResamples(labels: labels, count: resamples, seed: seed)
        return (statistic(Array(labels.indices)), percentileInterval(draws.map(statistic), level: level))
    }

    /// The mean over `models` of figure `name` on the images `at`.
    static func meanFigure(_ name: String, _ labels: [Int], _ models: [[Double]], _ at: [Int]) -> Double {
        let y = at.map { labels[$0] }
        return models.reduce(0.0) { sum, scores in sum + BinaryFigures(labels: y, scores: at.map { scores[$0] })[name] }
            / Double(models.count)
    }

    // MARK: exact tests and intervals

    /// Clopper-Pearson exact interval of a proportion k/n: the beta quantiles
    /// B(alpha/2; k, n-k+1) and B(1-alpha/2; k+1, n-k).
    public static func clopperPearson(successes k: Int, trials n: Int, level: Double = 0.95) -> Interval {
        precondition(n > 0 && k >= 0 && k <= n)
        let alpha = 1 - level
        let lo = k == 0 ? 0 : betaQuantile(alpha / 2, a: Double(k), b: Double(n - k + 1))
        let hi = k == n ? 1 : betaQuantile(1 - alpha / 2, a: Double(k + 1), b: Double(n - k))
        return Interval(lower: lo, upper: hi, level: level)
    }

    /// McNemar's exact test on the discordant pairs: `b` images only model A
    /// gets right, `c` only model B. Two-sided p = min(1, 2 P(X <= min(b, c)))
    /// with X ~ Binomial(b + c, 1/2); 1 when there are no discordant pairs.
    public static func mcnemarExact(b: Int, c: Int) -> Double {
        let n = b + c
        guard n > 0 else { return 1 }
        let k = min(b, c)
        // log C(n, i) - n log 2, summed in log space (n can be hundreds).
        var logTerms: [Double] = []
        for i in 0...k { logTerms.append(logChoose(n, i) - Double(n) * log(2)) }
        let m = logTerms.max()!
        let tail = exp(m) * logTerms.reduce(0) { $0 + exp($1 - m) }
        return min(1, 2 * tail)
    }

    static func logChoose(_ n: Int, _ k: Int) -> Double {
        lgamma(Double(n) + 1) - lgamma(Double(k) + 1) - lgamma(Double(n - k) + 1)
    }

    /// The x with I_x(a, b) = p, by bisection (I is increasing in x).
    static func betaQuantile(_ p: Double, a: Double, b: Double) -> Double {
        var lo = 0.0, hi = 1.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if regularizedIncompleteBeta(mid, a: a, b: b) < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    /// I_x(a, b), by the continued fraction of Numerical Recipes (betacf),
    /// using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges faster.
    static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logGammas: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let logPowers: Double = a * log(x) + b * log(1 - x)
        let front = exp(logGammas + logPowers)
        if x < (a + 1) / (a + b + 2) { return front * betaContinuedFraction(x, a: a, b: b) / a }
        return 1 - front * betaContinuedFraction(1 - x, a: b, b: a) / b
    }

    static func betaContinuedFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0, d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...500 {
            let m2 = Double(2 * m), md = Double(m)
            var aa = md * (b - md) * x / ((a + m2 - 1) * (a + m2))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d; h *= d * c
            aa = -(a + md) * (a + b + md) * x / ((a + m2) * (a + m2 + 1))
            d = 1 + aa * d; if abs(d) < tiny { d = tiny }
            c = 1 + aa / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-15 { break }
        }
        return h
    }

    // MARK: several seeds

    /// Mean and sample standard deviation (n - 1); sd is NaN for one value.
    public static func meanSD(_ v: [Double]) -> (mean: Double, sd: Double) {
        guard !v.isEmpty else { return (.nan, .nan) }
        let m = v.reduce(0, +) / Double(v.count)
        guard v.count > 1 else { return (m, .nan) }
        return (m, (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count - 1)).squareRoot())
    }
}
