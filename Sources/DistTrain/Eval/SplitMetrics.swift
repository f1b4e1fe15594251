import Foundation

/// Classification metrics of one split. For two classes, class 1 is the
/// positive one (COVID): sensitivity = recall = TP/(TP+FN), specificity =
/// TN/(TN+FP), precision = TP/(TP+FP), F1, and ROC AUC from the scores
/// p(class 1) (Mann-Whitney, ties counted half).
public struct SplitMetrics: Codable, Sendable, Equatable {
    public var loss = Double.nan, accuracy = Double.nan
    public var sensitivity = Double.nan, specificity = Double.nan, precision = Double.nan, f1 = Double.nan, auc = Double.nan
    public var count = 0
    public var confusion: [[Int]] = []

    public init() {}

    public init(lossSum: Double, labels: [Int], predictions: [Int], scores: [Double], classes: Int) {
        count = labels.count
        guard count > 0 else { return }
        loss = lossSum / Double(count)
        var cm = Array(repeating: Array(repeating: 0, count: classes), count: classes)
        for (y, p) in zip(labels, predictions) { cm[y][p] += 1 }
        confusion = cm
        accuracy = Double(zip(labels, predictions).filter { $0 == $1 }.count) / Double(count)
        guard classes == 2 else { return }
        let b = BinaryFigures(tp: Double(cm[1][1]), tn: Double(cm[0][0]), fp: Double(cm[0][1]), fn: Double(cm[1][0]),
                              auc: SplitMetrics.rocAUC(labels: labels, scores: scores))
        (sensitivity, specificity, precision, f1, auc) = (b.sensitivity, b.specificity, b.precision, b.f1, b.auc)
    }

    /// P(score of a random positive > score of a random negative), ties 1/2.
    public static func rocAUC(labels: [Int], scores: [Double]) -> Double {
        let ranks = midranks(scores)
        let pos = labels.filter { $0 == 1 }.count, neg = labels.count - pos
        guard pos > 0 && neg > 0 else { return .nan }
        let sumPos = zip(labels, ranks).filter { $0.0 == 1 }.reduce(0) { $0 + $1.1 }
        return (sumPos - Double(pos * (pos + 1)) / 2) / Double(pos * neg)
    }

    /// The 1-based rank of each value in ascending order, tied values sharing their mean rank.
    public static func midranks(_ values: [Double]) -> [Double] {
        let order = values.indices.sorted { values[$0] < values[$1] }
        var ranks = [Double](repeating: 0, count: values.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && values[order[j + 1]] == values[order[i]] { j += 1 }
            let r = Double(i + j) / 2 + 1
            for k in i...j { ranks[order[k]] = r }
            i = j + 1
        }
        return ranks
    }
}
