import Foundation
import Net

/// Near-duplicates between splits: for every val and test image, its most
/// similar train image. The split of this data set is random per slice, with
/// about 20 slices per patient, so neighbouring slices of one patient sit on
/// both sides; a model can score well by recognising them.
///
/// Similarity, in two stages:
/// 1. Normalised cross-correlation (NCC) of 32 x 32 thumbnails (area
///    averages of the stored gray image), the query's central 28 x 28 crop
///    slid over every offset of +-2 pixels (+-14 px at 224) against the train
///    image's central crop, maximum over offsets. NCC subtracts the mean and
///    divides by the norm, so it ignores brightness and contrast changes; the
///    thumbnail ignores noise and fine texture; the sliding window ignores
///    small shifts. Byte-identical files score 1; see `defaultThreshold`. This
///    score, over all train images, is what the threshold is compared with.
/// 2. The `candidates` best train images by that score are compared again at
///    full resolution: NCC of the central crops, the query's crop slid
///    +-`fineShift` px around the candidate's thumbnail offset (a thumbnail
///    pixel is 7 px at 224, so this covers the shifts between two thumbnail
///    offsets). The best of them is the image's nearest train image. At 32 px
///    a shift of 3 px at 224 is a blur of half a thumbnail pixel, so a
///    neighbouring slice of the same scan can outscore the image a copy was
///    made from; at full resolution and the right shift the source matches
///    pixel for pixel and the neighbour does not.
public enum Audit {
    public static let thumbnail = 32
    public static let margin = 2
    /// Train images per query re-scored at full resolution (the best by thumbnail NCC).
    public static let candidates = 8
    /// The full-resolution shift searched around each candidate's thumbnail offset, pixels each way.
    public static let fineShift = 4

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
        /// Index into the data set of the image and of its nearest train image
        /// (the best of the thumbnail candidates at full resolution).
        public var image: Int, nearest: Int
        /// The highest thumbnail NCC of the image over all train images (what the threshold is compared with).
        public var score: Double
        /// Offset of the query's crop against `nearest` (pixels of the 32 x 32 thumbnail, -2...2).
        public var dx: Int, dy: Int
        /// NCC with `nearest` at full resolution, at the best shift (fineDX, fineDY: pixels of the
        /// image); nil when the images are too small for a full-resolution crop.
        public var fineScore: Double? = nil
        public var fineDX: Int? = nil, fineDY: Int? = nil
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

    /// One query's best train images by thumbnail NCC (best first) with the offset of each.
    struct Candidates {
        var train: [Int] = [], scores: [Float] = [], offsets: [(Int, Int)] = []
    }

    /// Stage 1: for every query, the `k` train images (positions in `train`) with the highest
    /// thumbnail NCC, each at its best offset. Ties keep the earlier image and offset, as a
    /// strict maximum does. Queries go in blocks so the score matrix stays within ~64 MB.
    static func thumbnailCandidates(trainThumbs: [Float], trainCount N: Int, queryThumbs: [Float], queryCount Q: Int, k: Int,
                                    threads: Int = 1) -> [Candidates] {
        let S = thumbnail, D = (S - 2 * margin) * (S - 2 * margin), side = 2 * margin + 1
        var T = [Float](repeating: 0, count: N * D)
        trainThumbs.withUnsafeBufferPointer { t in T.withUnsafeMutableBufferPointer { o in
            for i in 0..<N { standardizedCrop(t.baseAddress! + i * S * S, ox: margin, oy: margin, into: o.baseAddress! + i * D) }
        } }
        var out = [Candidates](repeating: Candidates(), count: Q)
        let block = max(1, min(Q, (1 << 24) / max(N, 1)))
        for start in stride(from: 0, to: Q, by: block) {
            let n = min(block, Q - start)
            var best = [Float](repeating: -2, count: n * N), at = [UInt8](repeating: 0, count: n * N)
            var q = [Float](repeating: 0, count: n * D), scores = [Float](repeating: 0, count: n * N)
            for oy in 0..<side {
                for ox in 0..<side {
                    queryThumbs.withUnsafeBufferPointer { t in q.withUnsafeMutableBufferPointer { o in
                        for i in 0..<n {
                            standardizedCrop(t.baseAddress! + (start + i) * S * S, ox: ox, oy: oy, into: o.baseAddress! + i * D)
                        }
                    } }
                    BLAS.multiplyTransposed(q, T, M: n, N: N, K: D, into: &scores, threads: threads)
                    let code = UInt8(oy * side + ox)
                    for p in 0..<(n * N) where scores[p] > best[p] { best[p] = scores[p]; at[p] = code }
                }
            }
            for i in 0..<n {
                // The k largest of the row, by insertion into a short sorted list.
                var c = Candidates()
                for j in 0..<N {
                    let s = best[i * N + j]
                    guard c.train.count < k || s > c.scores[c.train.count - 1] else { continue }
                    var pos = c.train.count
                    while pos > 0 && s > c.scores[pos - 1] { pos -= 1 }
                    let code = Int(at[i * N + j])
                    c.train.insert(j, at: pos); c.scores.insert(s, at: pos)
                    c.offsets.insert((code % side - margin, code / side - margin), at: pos)
                    if c.train.count > k { c.train.removeLast(); c.scores.removeLast(); c.offsets.removeLast() }
                }
                out[start + i] = c
            }
        }
        return out
    }

    /// Stage 2: NCC at full resolution. The train image's central crop (W - 2Mx) x (H - 2My)
    /// against the query's crop moved by (sx, sy); M covers the thumbnail offsets (+-margin
    /// thumbnail pixels) plus `fineShift`, so every shift stays inside the query image.
    struct FineGeometry {
        let W: Int, H: Int, C: Int
        let Mx: Int, My: Int, Dx: Int, Dy: Int

        /// nil when the crop would be under 8 px a side (then the thumbnail's choice stands).
        init?(width W: Int, height H: Int, channels C: Int) {
            let S = Audit.thumbnail
            self.W = W; self.H = H; self.C = C
            Mx = (Audit.margin * W + S - 1) / S + Audit.fineShift
            My = (Audit.margin * H + S - 1) / S + Audit.fineShift
            Dx = W - 2 * Mx; Dy = H - 2 * My
            guard Dx >= 8, Dy >= 8 else { return nil }
        }

        /// The full-resolution shift of a thumbnail offset.
        func centre(_ offset: (Int, Int)) -> (Int, Int) {
            let S = Audit.thumbnail
            return (Int((Double(offset.0 * W) / Double(S)).rounded()), Int((Double(offset.1 * H) / Double(S)).rounded()))
        }

        /// Gray values (mean over channels) of image `k` of a CHW byte block.
        func gray(_ bytes: [UInt8], _ k: Int) -> [Float] {
            let HW = H * W, src = k * C * HW, C = self.C
            var g = [Float](repeating: 0, count: HW)
            bytes.withUnsafeBufferPointer { b in g.withUnsafeMutableBufferPointer { o in
                for c in 0..<C { let p = b.baseAddress! + src + c * HW; for i in 0..<HW { o[i] += Float(p[i]) } }
                if C > 1 { let inv = 1 / Float(C); for i in 0..<HW { o[i] *= inv } }
            } }
            return g
        }

        /// The train image's central crop, zero mean and unit norm (all zero when flat).
        func standardizedCentre(_ g: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: Dx * Dy)
            let W = self.W, Mx = self.Mx, My = self.My, Dx = self.Dx, Dy = self.Dy
            g.withUnsafeBufferPointer { gp in out.withUnsafeMutableBufferPointer { o in
                var sum = 0.0
                for y in 0..<Dy { let row = gp.baseAddress! + (My + y) * W + Mx; for x in 0..<Dx { sum += Double(row[x]) } }
                let mean = Float(sum / Double(Dx * Dy))
                var norm = 0.0
                for y in 0..<Dy {
                    let row = gp.baseAddress! + (My + y) * W + Mx
                    for x in 0..<Dx { let v = row[x] - mean; o[y * Dx + x] = v; norm += Double(v * v) }
                }
                let inv = norm > 0 ? Float(1 / norm.squareRoot()) : 0
                for i in 0..<o.count { o[i] *= inv }
            } }
            return out
        }

        /// A query prepared once for all its candidates: gray values less their mean (the
        /// products with a zero-mean crop are unchanged, the Float sums smaller), and
        /// summed-area tables of the gray values and their squares (exact in Double: the
        /// values are bytes or means of a few), for each window's norm.
        struct Query {
            var centred: [Float]
            var sum: [Double], squares: [Double]
        }

        func query(_ g: [Float]) -> Query {
            let W = self.W, H = self.H, W1 = W + 1
            var sum = [Double](repeating: 0, count: W1 * (H + 1)), squares = sum, centred = g
            g.withUnsafeBufferPointer { gp in sum.withUnsafeMutableBufferPointer { s in squares.withUnsafeMutableBufferPointer { s2 in
                for y in 0..<H {
                    var row = 0.0, row2 = 0.0
                    for x in 0..<W {
                        let v = Double(gp[y * W + x])
                        row += v; row2 += v * v
                        s[(y + 1) * W1 + x + 1] = s[y * W1 + x + 1] + row
                        s2[(y + 1) * W1 + x + 1] = s2[y * W1 + x + 1] + row2
                    }
                }
            } } }
            let mean = Float(sum[W1 * (H + 1) - 1] / Double(W * H))
            centred.withUnsafeMutableBufferPointer { c in for i in 0..<c.count { c[i] -= mean } }
            return Query(centred: centred, sum: sum, squares: squares)
        }

        /// The best NCC of the query over shifts centre +- fineShift against a standardized
        /// train crop, with that shift. NCC = sum(q t^) / |q - mean q| over the window, t^ of
        /// zero mean and unit norm: brightness and contrast of either image do not count.
        func best(_ q: Query, _ t: [Float], centre: (Int, Int)) -> (score: Double, dx: Int, dy: Int) {
            let F = Audit.fineShift, side = 2 * F + 1, n = Double(Dx * Dy), W1 = W + 1
            var best = (score: -2.0, dx: 0, dy: 0)
            var acc = [Double](repeating: 0, count: side)
            q.centred.withUnsafeBufferPointer { qp in t.withUnsafeBufferPointer { tp in acc.withUnsafeMutableBufferPointer { ap in
                for sy in (centre.1 - F)...(centre.1 + F) {
                    for i in 0..<side { ap[i] = 0 }
                    for y in 0..<Dy {
                        // Row y of the crop against the query's row at every horizontal shift.
                        let row = qp.baseAddress! + (My + sy + y) * W + Mx + centre.0 - F, trow = tp.baseAddress! + y * Dx
                        if side == 9 {
                            Audit.correlate9(row, trow, Dx, ap.baseAddress!)
                        } else {
                            for i in 0..<side { ap[i] += Double(Audit.dot(row + i, trow, Dx)) }
                        }
                    }
                    for i in 0..<side {
                        let sx = centre.0 - F + i
                        let x0 = Mx + sx, y0 = My + sy, x1 = x0 + Dx, y1 = y0 + Dy
                        let s = q.sum[y1 * W1 + x1] - q.sum[y0 * W1 + x1] - q.sum[y1 * W1 + x0] + q.sum[y0 * W1 + x0]
                        let s2 = q.squares[y1 * W1 + x1] - q.squares[y0 * W1 + x1] - q.squares[y1 * W1 + x0] + q.squares[y0 * W1 + x0]
                        let variance = s2 - s * s / n
                        let score = variance > 1e-9 * max(s2, 1) ? min(ap[i] / variance.squareRoot(), 1) : 0
                        if score > best.score { best = (score, sx, sy) }
                    }
                }
            } } }
            return best
        }
    }

    /// acc[i] += sum_x q[x + i] t[x] for i in 0..<9: one row of the crop against the nine horizontal
    /// shifts of a query row (q has n + 8 values). Each load of t serves nine products, in nine
    /// accumulators of four lanes (independent chains, all in registers even with SSE2 only);
    /// the order of the sums is fixed, so the result does not depend on threads.
    @inline(__always)
    static func correlate9(_ q: UnsafePointer<Float>, _ t: UnsafePointer<Float>, _ n: Int, _ acc: UnsafeMutablePointer<Double>) {
        typealias V = SIMD4<Float>
        var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V(), a8 = V()
        let rq = UnsafeRawPointer(q), rt = UnsafeRawPointer(t)
        var x = 0
        while x + 4 <= n {
            let tv = rt.loadUnaligned(fromByteOffset: 4 * x, as: V.self), o = 4 * x
            a0 += rq.loadUnaligned(fromByteOffset: o, as: V.self) * tv
            a1 += rq.loadUnaligned(fromByteOffset: o + 4, as: V.self) * tv
            a2 += rq.loadUnaligned(fromByteOffset: o + 8, as: V.self) * tv
            a3 += rq.loadUnaligned(fromByteOffset: o + 12, as: V.self) * tv
            a4 += rq.loadUnaligned(fromByteOffset: o + 16, as: V.self) * tv
            a5 += rq.loadUnaligned(fromByteOffset: o + 20, as: V.self) * tv
            a6 += rq.loadUnaligned(fromByteOffset: o + 24, as: V.self) * tv
            a7 += rq.loadUnaligned(fromByteOffset: o + 28, as: V.self) * tv
            a8 += rq.loadUnaligned(fromByteOffset: o + 32, as: V.self) * tv
            x += 4
        }
        acc[0] += Double(a0.sum()); acc[1] += Double(a1.sum()); acc[2] += Double(a2.sum())
        acc[3] += Double(a3.sum()); acc[4] += Double(a4.sum()); acc[5] += Double(a5.sum())
        acc[6] += Double(a6.sum()); acc[7] += Double(a7.sum()); acc[8] += Double(a8.sum())
        if x < n {
            for i in 0..<9 {
                var r: Float = 0
                for k in x..<n { r += q[k + i] * t[k] }
                acc[i] += Double(r)
            }
        }
    }

    /// sum a[i] b[i], eight lanes at a time (the accumulation order is fixed, so results do not depend on threads).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 16 <= n {
            s0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            s1 += ra.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// `threads`: the GEMMs and the full-resolution search split over them (the result does not depend on them).
    public static func run(_ ds: Dataset, threshold: Double = defaultThreshold, threads: Int = 1) throws -> Result {
        let train = ds[split: .train]
        let queries = [Split.val, Split.test].flatMap { s in ds[split: s].map { (s, $0) } }
        guard !train.isEmpty, !queries.isEmpty else {
            return Result(matches: [], threshold: threshold, nearestNeighbourAccuracy: .nan)
        }
        let Q = queries.count
        let found = thumbnailCandidates(trainThumbs: try thumbnails(ds, train), trainCount: train.count,
                                        queryThumbs: try thumbnails(ds, queries.map(\.1)), queryCount: Q,
                                        k: min(candidates, train.count), threads: threads)
        // The chosen candidate of each query (position in its list) and its full-resolution score and shift.
        var chosen = [Int](repeating: 0, count: Q)
        var fine = [(score: Double, dx: Int, dy: Int)?](repeating: nil, count: Q)
        if let g = FineGeometry(width: ds.width, height: ds.height, channels: ds.channels) {
            // Blocks of queries: their images and their candidates' are read once per block.
            let block = 32
            for start in stride(from: 0, to: Q, by: block) {
                let range = start..<min(start + block, Q)
                let queryBytes = try ds.readImages(range.map { queries[$0].1 })
                let needed = Array(Set(range.flatMap { found[$0].train })).sorted()
                let trainBytes = try ds.readImages(needed.map { train[$0] })
                let crops = needed.indices.map { g.standardizedCentre(g.gray(trainBytes, $0)) }
                let cropOf = Dictionary(uniqueKeysWithValues: needed.enumerated().map { ($1, $0) })
                var picked = [(Int, (score: Double, dx: Int, dy: Int))](repeating: (0, (-2, 0, 0)), count: range.count)
                picked.withUnsafeMutableBufferPointer { out in
                    Parallel(threads: threads).chunks(range.count) { lo, hi in
                        for k in lo..<hi {
                            let i = range.lowerBound + k, q = g.query(g.gray(queryBytes, k))
                            for (c, j) in found[i].train.enumerated() {
                                guard let crop = cropOf[j] else { continue }
                                let r = g.best(q, crops[crop], centre: g.centre(found[i].offsets[c]))
                                if r.score > out[k].1.score { out[k] = (c, r) }  // ties keep the better thumbnail score
                            }
                        }
                    }
                }
                for (k, p) in picked.enumerated() { chosen[range.lowerBound + k] = p.0; fine[range.lowerBound + k] = p.1 }
            }
        }
        let matches = queries.enumerated().map { i, query in
            let c = found[i], k = chosen[i]
            return Match(split: query.0, image: query.1, nearest: train[c.train[k]], score: Double(min(c.scores[0], 1)),
                         dx: c.offsets[k].0, dy: c.offsets[k].1, fineScore: fine[i]?.score, fineDX: fine[i]?.dx, fineDY: fine[i]?.dy)
        }
        let tests = matches.filter { $0.split == .test }
        let right = tests.filter { ds.labels[$0.nearest] == ds.labels[$0.image] }.count
        var result = Result(matches: matches, threshold: threshold,
                            nearestNeighbourAccuracy: tests.isEmpty ? .nan : Double(right) / Double(tests.count))
        if let groups = try ds.groups() {
            guard groups.count == ds.labels.count else {
                throw RuntimeError("\(ds.path): \(groups.count) groups for \(ds.labels.count) images")
            }
            var splitsOf: [String: Set<Split>] = [:]
            for s in Split.allCases { for i in ds[split: s] { splitsOf[groups[i], default: []].insert(s) } }
            result.crossingGroups = splitsOf.filter { $0.value.count > 1 }.keys.sorted()
        }
        return result
    }
}
