import Foundation
import Net

/// Near-duplicates between splits: for every val and test image, its most
/// similar train image. The split of this data set is random per slice, with
/// about 20 slices per patient, so neighbouring slices of one patient sit on
/// both sides; a model can score well by recognising them.
///
/// Similarity: normalised cross-correlation (NCC) of 32 x 32 thumbnails (area
/// averages of the stored gray image), the query's central 28 x 28 crop
/// slid over every offset of +-2 pixels (+-14 px at 224) against the train
/// image's central crop, maximum over offsets. NCC subtracts the mean and
/// divides by the norm, so it ignores brightness and contrast changes; the
/// thumbnail ignores noise and fine texture; the sliding window ignores
/// small shifts. Byte-identical files score 1; see `defaultThreshold`.
public enum Audit {
    public static let thumbnail = 32
    public static let margin = 2

    /// Pairs at or above this are called near-duplicates. On the CT split
    /// (docs/results/audit.md) the byte-identical pair Covid (134)/(135)
    /// scores 1.000 and copies shifted by 3-4 px with brightness and contrast
    /// changed score above it (EvidenceTests); the test scores are continuous
    /// (median 0.93; 122 of 400 at >= 0.95, 7 at >= 0.98), since slices look
    /// alike at 32 px and no patient ids tell a neighbouring slice of the same
    /// scan from a similar slice of another. 0.95 marks the closest ~30 % as
    /// near-duplicates; it does not prove them so, which is why the
    /// nearest-neighbour baseline is reported beside it.
    public static let defaultThreshold = 0.95

    public struct Match: Codable, Sendable {
        public var split: Split
        /// Index into the data set of the image and of its nearest train image.
        public var image: Int, nearest: Int
        public var score: Double
        /// Offset of the query's crop (pixels of the 32 x 32 thumbnail, -2...2).
        public var dx: Int, dy: Int
    }

    public struct Result: Sendable {
        public var matches: [Match]
        public var threshold: Double
        /// Test accuracy of the nearest train image's label (the baseline a network must beat).
        public var nearestNeighbourAccuracy: Double
        /// Groups (patients) with images in more than one split, when the data set has groups.
        public var crossingGroups: [String]? = nil
        public func duplicated(_ split: Split) -> [Match] { matches.filter { $0.split == split && $0.score >= threshold } }
        /// Positions (in the split's order) of images without a train neighbour at the threshold.
        public func cleanPositions(_ split: Split) -> [Int] {
            matches.filter { $0.split == split }.enumerated().filter { $0.element.score < threshold }.map(\.offset)
        }
    }

    /// Gray 32 x 32 thumbnails of `indices`, row-major, by area averaging.
    static func thumbnails(_ ds: Dataset, _ indices: [Int]) throws -> [Float] {
        let S = thumbnail, C = ds.channels, H = ds.height, W = ds.width
        var out = [Float](repeating: 0, count: indices.count * S * S)
        var start = 0
        while start < indices.count {  // in chunks: a data set may not fit in memory twice
            let chunk = Array(indices[start..<min(start + 256, indices.count)])
            let bytes = try ds.readImages(chunk)
            for (k, _) in chunk.enumerated() {
                let img = (start + k) * S * S, src = k * C * H * W
                for y in 0..<S {
                    let y0 = y * H / S, y1 = max((y + 1) * H / S, y0 + 1)
                    for x in 0..<S {
                        let x0 = x * W / S, x1 = max((x + 1) * W / S, x0 + 1)
                        var sum = 0.0
                        for c in 0..<C { for yy in y0..<y1 { for xx in x0..<x1 { sum += Double(bytes[src + (c * H + yy) * W + xx]) } } }
                        out[img + y * S + x] = Float(sum / Double(C * (y1 - y0) * (x1 - x0)))
                    }
                }
            }
            start += chunk.count
        }
        return out
    }

    /// The (S - 2m)^2 crop of thumbnail `t` at offset (ox, oy), zero mean and unit norm.
    static func standardizedCrop(_ t: UnsafePointer<Float>, ox: Int, oy: Int, into out: UnsafeMutablePointer<Float>) {
        let S = thumbnail, D = S - 2 * margin
        var mean: Float = 0
        for y in 0..<D { for x in 0..<D { mean += t[(oy + y) * S + ox + x] } }
        mean /= Float(D * D)
        var norm: Float = 0
        for y in 0..<D { for x in 0..<D { let v = t[(oy + y) * S + ox + x] - mean; out[y * D + x] = v; norm += v * v } }
        let inv = norm > 0 ? 1 / norm.squareRoot() : 0
        for i in 0..<(D * D) { out[i] *= inv }
    }

    public static func run(_ ds: Dataset, threshold: Double = defaultThreshold) throws -> Result {
        let train = ds[split: .train]
        let queries = [Split.val, Split.test].flatMap { s in ds[split: s].map { (s, $0) } }
        guard !train.isEmpty, !queries.isEmpty else {
            return Result(matches: [], threshold: threshold, nearestNeighbourAccuracy: .nan)
        }
        let S = thumbnail, D = (S - 2 * margin) * (S - 2 * margin)
        let trainThumbs = try thumbnails(ds, train), queryThumbs = try thumbnails(ds, queries.map(\.1))
        var T = [Float](repeating: 0, count: train.count * D)
        trainThumbs.withUnsafeBufferPointer { t in T.withUnsafeMutableBufferPointer { o in
            for i in 0..<train.count { standardizedCrop(t.baseAddress! + i * S * S, ox: margin, oy: margin, into: o.baseAddress! + i * D) }
        } }
        let Q = queries.count
        var best = [Float](repeating: -2, count: Q), nearest = [Int](repeating: 0, count: Q)
        var offset = [(Int, Int)](repeating: (0, 0), count: Q)
        var q = [Float](repeating: 0, count: Q * D), scores = [Float](repeating: 0, count: Q * train.count)
        for oy in 0...(2 * margin) {
            for ox in 0...(2 * margin) {
                queryThumbs.withUnsafeBufferPointer { t in q.withUnsafeMutableBufferPointer { o in
                    for i in 0..<Q { standardizedCrop(t.baseAddress! + i * S * S, ox: ox, oy: oy, into: o.baseAddress! + i * D) }
                } }
                BLAS.multiplyTransposed(q, T, M: Q, N: train.count, K: D, into: &scores)
                for i in 0..<Q {
                    for j in 0..<train.count where scores[i * train.count + j] > best[i] {
                        best[i] = scores[i * train.count + j]; nearest[i] = j; offset[i] = (ox - margin, oy - margin)
                    }
                }
            }
        }
        let matches = queries.enumerated().map { i, query in
            Match(split: query.0, image: query.1, nearest: train[nearest[i]], score: Double(min(best[i], 1)),
                  dx: offset[i].0, dy: offset[i].1)
        }
        let tests = matches.filter { $0.split == .test }
        let right = tests.filter { ds.labels[$0.nearest] == ds.labels[$0.image] }.count
        var result = Result(matches: matches, threshold: threshold,
                            nearestNeighbourAccuracy: tests.isEmpty ? .nan : Double(right) / Double(tests.count))
        if let groups = try ds.groups() {
            var splitsOf: [String: Set<Split>] = [:]
            for s in Split.allCases { for i in ds[split: s] { splitsOf[groups[i], default: []].insert(s) } }
            result.crossingGroups = splitsOf.filter { $0.value.count > 1 }.keys.sorted()
        }
        return result
    }
}
