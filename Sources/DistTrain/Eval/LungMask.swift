import Foundation

/// The lung field of one 8-bit, lung-windowed axial CT slice, from grey
/// levels and shapes alone (no learned model): where "the network looks"
/// is measured against it (LungEnergy.swift) and what lies outside it is
/// occluded (`occludeOutsideLungs`).
///
/// The recipe, each step for a reason met on the CT set (224 px, cropped to
/// the body, air outside about grey 60, lung 70-90, soft tissue 200-250) and
/// on MedSeg (270-460 px, often cropped inside the chest wall so that the
/// lungs touch the image's edge):
/// 1. smooth (5x5 binomial, sigma 1 px): CT noise and thin vessels do not
///    split the lung or the chest wall;
/// 2. Otsu's threshold on the whole smoothed slice: dark (air, lung, ground
///    glass) against bright (soft tissue, bone, consolidation); the histogram
///    is bimodal in any lung window, so no grey level is assumed;
/// 3. the body: the convex hull of the bright components over 0.5 % of the
///    slice (specks and burnt-in text are smaller); the air outside the body
///    lies outside this hull. Removing dark components that touch the image
///    border would remove MedSeg's lungs, which often do;
/// 4. lung candidates: dark components (4-connected) over 1 % of the slice
///    (the trachea is about 0.4 %) with at least half their pixels inside the
///    hull, the four largest (two lungs, each possibly cut in two by a lesion
///    band or a fissure);
/// 5. lesions brighter than the threshold: the lungs grow for at most 15 % of
///    the slice's side into pixels no brighter than 70 % of the way from the
///    threshold to the median bright grey (ground glass and most
///    consolidation; the heart and chest wall, at the median, are not
///    reached); bounded, so a dim mediastinum is entered 15 % deep at most.
///    Level and depth were chosen on every 7th MedSeg slice: halfway and 10 %
///    kept 86 % of the lesions' pixels, 70 % and 15 % keep 95 %, the mask's
///    area growing from 51 to 54 % of the slice; 80 % reached into the heart;
/// 6. split at the column between the lungs (the fewest lung pixels in the
///    middle third of the body), then on each side alone: fill holes
///    (vessels, lesions inside the lung), a closing with a disc of 4 % of the
///    side (lesions and vessels at the lung's edge, up to that depth), fill
///    holes again. Each side alone, so the mediastinum, enclosed when the two
///    lungs touch in front of and behind it, is never filled.
/// Missed: consolidation as bright as soft tissue that lies against the
/// chest wall and deeper than the closing (dependent lung in severe cases);
/// also kept: gas in the stomach when it is as large as a lung candidate.
/// Of the infection pixels MedSeg's radiologist drew on its 98 slices, 93.0 %
/// fall inside (per slice: median 99 %, 9 slices under 80 %; LungMaskTests
/// checks every 7th slice).
public enum LungMask {
    /// Bright components smaller than this share of the slice are not body (step 3).
    static let bodyMinArea = 0.005
    /// Dark components smaller than this share of the slice are not lung (step 4).
    static let lungMinArea = 0.01
    /// At most this many dark components are kept (step 4).
    static let maxComponents = 4
    /// Growth into lesions: how far (share of the side) and how bright
    /// (share of the way from the threshold to the median bright grey) (step 5).
    static let growDepth = 0.15, growLevel = 0.7
    /// The closing's disc radius, share of the side (step 6).
    static let closingRadius = 0.04

    /// The lung mask of a `width` x `height` grey slice (rows top to bottom).
    /// All false when the slice has no dark region inside a body.
    public static func mask(gray: [UInt8], width W: Int, height H: Int) -> [Bool] {
        precondition(gray.count == W * H && W > 0 && H > 0, "a \(W)x\(H) slice with \(gray.count) pixels")
        let N = W * H, side = Double(max(W, H))
        let s = smoothed(gray, W, H)
        var histogram = [Int](repeating: 0, count: 256)
        for v in s { histogram[Int(v.rounded())] += 1 }
        let t = otsuThreshold(histogram)
        // 3. The body's hull.
        let tissue = s.map { $0 > Float(t) }
        let (tissueLabels, tissueSizes) = components(tissue, W, H)
        let body = tissueLabels.map { $0 > 0 && Double(tissueSizes[Int($0)]) >= bodyMinArea * Double(N) }
        let hull = convexHull(body, W, H)
        // 4. Dark components mostly inside it, the largest first.
        let dark = tissue.map { !$0 }
        let (labels, sizes) = components(dark, W, H)
        var inside = [Int](repeating: 0, count: sizes.count)
        for i in 0..<N where labels[i] > 0 && hull[i] { inside[Int(labels[i])] += 1 }
        let kept = sizes.indices.dropFirst().filter { Double(sizes[$0]) >= lungMinArea * Double(N) && 2 * inside[$0] >= sizes[$0] }
            .sorted { sizes[$0] > sizes[$1] }.prefix(maxComponents)
        guard !kept.isEmpty else { return [Bool](repeating: false, count: N) }
        let keep = Set(kept.map { Int32($0) })
        var lungs = labels.map { keep.contains($0) }
        // 5. Into the lesions brighter than the threshold, a bounded distance.
        let brightMedian = median(histogram, above: t)
        let level = Float(Double(t) + growLevel * (brightMedian - Double(t)))
        lungs = grow(lungs, allowed: (0..<N).map { s[$0] <= level && hull[$0] }, steps: max(1, Int((growDepth * side).rounded())), W, H)
        // 6. Each side of the mediastinum alone.
        let cut = middleColumn(lungs, hull, W, H)
        let radius = max(1, Int((closingRadius * side).rounded()))
        var out = [Bool](repeating: false, count: N)
        for left in [true, false] {
            func onSide(_ i: Int) -> Bool { left ? i % W < cut : i % W > cut }
            let half = (0..<N).map { lungs[$0] && onSide($0) }
            let closed = fillHoles(closing(fillHoles(half, W, H), radius: radius, W, H), W, H)
            for i in 0..<N where closed[i] && onSide(i) { out[i] = true }
        }
        return out
    }

    // MARK: the steps

    /// 5x5 binomial smoothing ([1 4 6 4 1] / 16 each way), borders clamped.
    static func smoothed(_ g: [UInt8], _ W: Int, _ H: Int) -> [Float] {
        let k: [Float] = [1, 4, 6, 4, 1].map { $0 / 16 }
        var rows = [Float](repeating: 0, count: W * H), out = rows
        for y in 0..<H { for x in 0..<W {
            var v: Float = 0
            for d in -2...2 { v += k[d + 2] * Float(g[y * W + min(max(x + d, 0), W - 1)]) }
            rows[y * W + x] = v
        } }
        for y in 0..<H { for x in 0..<W {
            var v: Float = 0
            for d in -2...2 { v += k[d + 2] * rows[min(max(y + d, 0), H - 1) * W + x] }
            out[y * W + x] = v
        } }
        return out
    }

    /// Otsu's threshold of a 256-bin histogram: the grey t that maximises the
    /// between-class variance of {<= t} and {> t}. 0 for a constant image.
    static func otsuThreshold(_ h: [Int]) -> Int {
        let total = Double(h.reduce(0, +)), sum = h.indices.reduce(0.0) { $0 + Double($1 * h[$1]) }
        var below = 0.0, belowSum = 0.0, best = -1.0, t = 0
        for i in 0..<255 {
            below += Double(h[i]); belowSum += Double(i * h[i])
            let above = total - below
            guard below > 0, above > 0 else { continue }
            let d = belowSum / below - (sum - belowSum) / above
            let between = below * above * d * d
            if between > best { best = between; t = i }
        }
        return t
    }

    /// The median grey of the pixels above `t` (t + 1 when there are none).
    static func median(_ h: [Int], above t: Int) -> Double {
        let n = h[(t + 1)...].reduce(0, +)
        var seen = 0
        for i in (t + 1)..<256 {
            seen += h[i]
            if 2 * seen >= n && n > 0 { return Double(i) }
        }
        return Double(t + 1)
    }

    /// 4-connected components: a label per pixel (0 outside `m`, 1... inside)
    /// and each label's size (index 0 unused).
    static func components(_ m: [Bool], _ W: Int, _ H: Int) -> (labels: [Int32], sizes: [Int]) {
        var labels = [Int32](repeating: 0, count: W * H), sizes = [0]
        var stack: [Int] = []
        for start in 0..<(W * H) where m[start] && labels[start] == 0 {
            let label = Int32(sizes.count)
            var size = 0
            labels[start] = label
            stack.append(start)
            while let i = stack.popLast() {
                size += 1
                forNeighbours(of: i, W, H) { j in
                    if m[j] && labels[j] == 0 { labels[j] = label; stack.append(j) }
                }
            }
            sizes.append(size)
        }
        return (labels, sizes)
    }

    /// The convex hull of `m`'s pixels (as unit squares) filled: a pixel is in
    /// when its centre is inside the hull polygon. Andrew's monotone chain
    /// over the outer corners of each row's first and last pixel (the hull of
    /// a row's span is the hull of its ends).
    static func convexHull(_ m: [Bool], _ W: Int, _ H: Int) -> [Bool] {
        var points: [(x: Double, y: Double)] = []
        for y in 0..<H {
            guard let first = (0..<W).first(where: { m[y * W + $0] }), let last = (0..<W).last(where: { m[y * W + $0] }) else { continue }
            let (x0, x1, y0, y1) = (Double(first), Double(last + 1), Double(y), Double(y + 1))
            points += [(x0, y0), (x0, y1), (x1, y0), (x1, y1)]
        }
        var out = [Bool](repeating: false, count: W * H)
        guard !points.isEmpty else { return out }
        points.sort { $0.x != $1.x ? $0.x < $1.x : $0.y < $1.y }
        func cross(_ o: (x: Double, y: Double), _ a: (x: Double, y: Double), _ b: (x: Double, y: Double)) -> Double {
            (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
        }
        var lower: [(x: Double, y: Double)] = [], upper: [(x: Double, y: Double)] = []
        for p in points {
            while lower.count >= 2 && cross(lower[lower.count - 2], lower[lower.count - 1], p) <= 0 { lower.removeLast() }
            lower.append(p)
        }
        for p in points.reversed() {
            while upper.count >= 2 && cross(upper[upper.count - 2], upper[upper.count - 1], p) <= 0 { upper.removeLast() }
            upper.append(p)
        }
        let polygon = lower.dropLast() + upper.dropLast()
        // Each row's centre line meets the convex polygon in one span [lo, hi].
        for y in 0..<H {
            let cy = Double(y) + 0.5
            var lo = Double.infinity, hi = -Double.infinity
            for (k, a) in polygon.enumerated() {
                let b = polygon[(k + 1) % polygon.count]
                guard (a.y <= cy && cy <= b.y) || (b.y <= cy && cy <= a.y) else { continue }
                let xs = a.y == b.y ? [a.x, b.x] : [a.x + (cy - a.y) / (b.y - a.y) * (b.x - a.x)]
                for x in xs { lo = min(lo, x); hi = max(hi, x) }
            }
            guard lo <= hi else { continue }
            for x in max(0, Int((lo - 0.5).rounded(.up)))..<min(W, Int((hi - 0.5).rounded(.down)) + 1) { out[y * W + x] = true }
        }
        return out
    }

    /// `seed` grown through `allowed` pixels (4-neighbours) for at most `steps`
    /// steps: a breadth-first search from every seed pixel at once.
    static func grow(_ seed: [Bool], allowed: [Bool], steps: Int, _ W: Int, _ H: Int) -> [Bool] {
        var out = seed
        var front = seed.indices.filter { seed[$0] }
        for _ in 0..<steps where !front.isEmpty {
            var next: [Int] = []
            for i in front {
                forNeighbours(of: i, W, H) { j in
                    if allowed[j] && !out[j] { out[j] = true; next.append(j) }
                }
            }
            front = next
        }
        return out
    }

    /// The cut between the lungs: in the middle third of the body's columns,
    /// the one with the fewest lung pixels (ties: the nearest the middle).
    static func middleColumn(_ lungs: [Bool], _ body: [Bool], _ W: Int, _ H: Int) -> Int {
        var count = [Int](repeating: 0, count: W), inBody = [Bool](repeating: false, count: W)
        for i in 0..<(W * H) {
            if lungs[i] { count[i % W] += 1 }
            if body[i] { inBody[i % W] = true }
        }
        guard let x0 = inBody.firstIndex(of: true), let x1 = inBody.lastIndex(of: true) else { return W / 2 }
        let third = (x1 - x0) / 3, middle = Double(x0 + x1) / 2
        return (x0 + third...x1 - third).min { (count[$0], abs(Double($0) - middle)) < (count[$1], abs(Double($1) - middle)) } ?? W / 2
    }

    /// Calls `body` with each 4-neighbour of pixel i inside the image.
    @inline(__always)
    static func forNeighbours(of i: Int, _ W: Int, _ H: Int, _ body: (Int) -> Void) {
        let x = i % W
        if i >= W { body(i - W) }
        if i + W < W * H { body(i + W) }
        if x > 0 { body(i - 1) }
        if x + 1 < W { body(i + 1) }
    }

    /// Holes filled: the background components that do not touch the border.
    static func fillHoles(_ m: [Bool], _ W: Int, _ H: Int) -> [Bool] {
        let (labels, sizes) = components(m.map { !$0 }, W, H)
        var outside = [Bool](repeating: false, count: sizes.count)
        for x in 0..<W { outside[Int(labels[x])] = true; outside[Int(labels[(H - 1) * W + x])] = true }
        for y in 0..<H { outside[Int(labels[y * W])] = true; outside[Int(labels[y * W + W - 1])] = true }
        return (0..<(W * H)).map { m[$0] || !outside[Int(labels[$0])] }
    }

    /// Dilation by a disc of `radius` pixels (pixels beyond the image are
    /// unset): per row, a prefix count answers "any set pixel in [x-w, x+w]".
    public static func dilated(_ m: [Bool], radius r: Int, width W: Int, height H: Int) -> [Bool] {
        guard r > 0 else { return m }
        var prefix = [Int](repeating: 0, count: H * (W + 1))
        for y in 0..<H { for x in 0..<W { prefix[y * (W + 1) + x + 1] = prefix[y * (W + 1) + x] + (m[y * W + x] ? 1 : 0) } }
        let halfWidth = (0...r).map { Int(Double(r * r - $0 * $0).squareRoot()) }
        var out = [Bool](repeating: false, count: W * H)
        for y in 0..<H { for x in 0..<W {
            for dy in max(-r, -y)...min(r, H - 1 - y) {
                let w = halfWidth[abs(dy)], row = (y + dy) * (W + 1)
                if prefix[row + min(W, x + w + 1)] > prefix[row + max(0, x - w)] { out[y * W + x] = true; break }
            }
        } }
        return out
    }

    /// Closing (dilation, then erosion, by the disc) in a frame padded by the
    /// radius, so that a mask touching the image's edge is closed as if the
    /// image went on empty, then cropped.
    static func closing(_ m: [Bool], radius r: Int, _ W: Int, _ H: Int) -> [Bool] {
        let PW = W + 2 * r, PH = H + 2 * r
        var padded = [Bool](repeating: false, count: PW * PH)
        for y in 0..<H { for x in 0..<W { padded[(y + r) * PW + x + r] = m[y * W + x] } }
        let grown = dilated(padded, radius: r, width: PW, height: PH)
        // Erosion: the complement of the complement's dilation (beyond the padded frame counts as set).
        let closed = dilated(grown.map { !$0 }, radius: r, width: PW, height: PH)
        return (0..<(W * H)).map { !closed[($0 / W + r) * PW + $0 % W + r] }
    }
}
