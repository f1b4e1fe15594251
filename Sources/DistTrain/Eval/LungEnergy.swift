import Foundation
import Net

/// Where a map's energy lies (issue 27, "where the network looks"): the
/// share of its sum inside the slice's lung mask (`LungMask`), against the
/// mask's area (what a uniform map scores), and the share in the image's
/// bottom rows, below the lungs, where the CAM grids of docs/results/r2 put
/// much of their weight (a possible shortcut: the table, the back).
public struct LungEnergy: Codable, Sendable, Equatable {
    /// A CAM method (`CAMKind`'s name) or "input-gradient".
    public var method: String
    /// Maps measured: those with any energy (a map of zeros points nowhere and is left out).
    public var images: Int
    /// Mean over maps of the share of the map's sum inside the lung mask.
    public var insideLungs: Double
    /// Mean lung-mask area share of the same slices: the chance level of `insideLungs`.
    public var lungArea: Double
    /// Mean share of the map's sum in the bottom `bottomFraction` of the rows.
    public var bottomRows: Double
    /// Those rows' share of the image: the chance level of `bottomRows`.
    public var bottomArea: Double
    /// Seconds the maps took (set by the caller; eval's cost of this row).
    public var seconds = 0.0

    /// The bottom rows measured: 15 %, about the band below the lungs' bases
    /// in the CT set's slices (the back, the table).
    public static let bottomFraction = 0.15

    /// Rows of an image `height` high counted as its bottom (at least one).
    public static func bottomRowCount(height: Int) -> Int { max(1, Int((bottomFraction * Double(height)).rounded())) }

    /// The share of `map`'s sum (non-negative values) inside `mask`; nil for a map of zeros.
    public static func share(_ map: [Float], inside mask: [Bool]) -> Double? {
        var inside = 0.0, total = 0.0
        for (v, m) in zip(map, mask) {
            total += Double(v)
            if m { inside += Double(v) }
        }
        return total > 0 ? inside / total : nil
    }

    /// The means over `maps` (each height x width, row-major) with their lung `masks`.
    public static func score(method: String, maps: [[Float]], masks: [[Bool]], height: Int) -> LungEnergy {
        precondition(maps.count == masks.count, "\(maps.count) maps and \(masks.count) masks")
        var n = 0, inside = 0.0, area = 0.0, bottom = 0.0
        for (map, mask) in zip(maps, masks) {
            guard let share = share(map, inside: mask) else { continue }
            let width = map.count / height, rows = bottomRowCount(height: height)
            let bottomMask = map.indices.map { $0 / width >= height - rows }
            n += 1
            inside += share
            area += Double(mask.filter { $0 }.count) / Double(mask.count)
            bottom += Self.share(map, inside: bottomMask) ?? 0
        }
        let d = Double(max(n, 1))
        return LungEnergy(method: method, images: n, insideLungs: inside / d, lungArea: area / d, bottomRows: bottom / d,
                          bottomArea: Double(bottomRowCount(height: height)) / Double(height))
    }

    /// The figures of several batches of one method (non-empty) as one: their means weighted by their images.
    public static func pooled(_ parts: [LungEnergy]) -> LungEnergy {
        let n = parts.reduce(0) { $0 + $1.images }, d = Double(max(n, 1))
        func mean(_ f: (LungEnergy) -> Double) -> Double { parts.reduce(0) { $0 + f($1) * Double($1.images) } / d }
        return LungEnergy(method: parts[0].method, images: n, insideLungs: mean(\.insideLungs), lungArea: mean(\.lungArea),
                          bottomRows: mean(\.bottomRows), bottomArea: parts[0].bottomArea, seconds: parts.reduce(0) { $0 + $1.seconds })
    }
}

/// The test split with everything outside the lungs replaced by the
/// background, beside the plain figures: if the network leans on the
/// image's edges (the table, the body's outline), its accuracy falls here.
public struct LungOcclusion: Codable, Sendable {
    /// The mask's dilation before occluding, pixels of the network's input.
    public var dilation: Int
    public var plain: SplitMetrics
    public var occluded: SplitMetrics

    /// The dilation: 2 % of the side (3 px at 160), so the lungs' edge and
    /// pleura stay and the mask's one-pixel cut between the lungs is closed.
    public static func dilation(size: Int) -> Int { max(1, Int((0.02 * Double(size)).rounded())) }

    /// Grey levels (0-255) of image k of x (N, C, S, S), channel 0 undone
    /// from its normalisation ((v / 255 - mean) / std).
    static func gray(_ x: Tensor, image k: Int, mean: Float, std: Float) -> [UInt8] {
        let plane = x.shape[2] * x.shape[3], base = x.data + k * x.shape[1] * plane
        return (0..<plane).map { UInt8(max(0, min(255, ((base[$0] * std + mean) * 255).rounded()))) }
    }

    /// The lung mask (`LungMask`, undilated) of image k of x (N, C, H, W), from channel 0
    /// undone from its normalisation by `mean`, `std` (per channel, as BatchMaker's).
    static func lungMask(_ x: Tensor, image k: Int, mean: [Float], std: [Float]) -> [Bool] {
        LungMask.mask(gray: gray(x, image: k, mean: mean[0], std: std[0]), width: x.shape[3], height: x.shape[2])
    }

    /// In place, in every image of x (N, C, S, S; normalised by `mean`, `std`
    /// per channel, as BatchMaker makes it): the pixels outside the image's
    /// lung mask, dilated by `dilation`, become the image's darkest grey
    /// (in the CT set air, about grey 60; the minimum of each channel's plane,
    /// which is that grey normalised). Returns each image's kept share.
    @discardableResult
    public static func occludeOutsideLungs(_ x: Tensor, mean: [Float], std: [Float], dilation: Int) -> [Double] {
        let N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], plane = H * W
        return (0..<N).map { k in
            let lungs = LungMask.dilated(lungMask(x, image: k, mean: mean, std: std), radius: dilation, width: W, height: H)
            for c in 0..<C {
                let p = x.data + (k * C + c) * plane
                var background = Float.infinity
                for i in 0..<plane { background = min(background, p[i]) }
                for i in 0..<plane where !lungs[i] { p[i] = background }
            }
            return Double(lungs.filter { $0 }.count) / Double(plane)
        }
    }
}

/// summary.json's "lungs": where the maps lie and the occlusion check.
public struct LungReport: Codable, Sendable {
    /// The test slices whose maps were measured (`sample` says which) and
    /// those of them whose lung mask came out empty (no dark region inside a body).
    public var slices = 0, emptyMasks = 0
    public var sample = ""
    /// Mean share of those slices that the occlusion keeps (the lung mask dilated).
    public var keptArea = 0.0
    /// One row per method: each CAM (explaining the predicted class) and the
    /// input gradient (|dL/dx| of the true class, the channels' maximum).
    public var energy: [LungEnergy] = []
    public var occlusion: LungOcclusion?
    /// Seconds the lung figures added to eval: the occluded pass over the test
    /// split (every rank its share) and the maps on the sample (rank 0).
    public var occlusionSeconds = 0.0, energySeconds = 0.0

    public init(occlusion: LungOcclusion?, occlusionSeconds: Double) {
        self.occlusion = occlusion; self.occlusionSeconds = occlusionSeconds
    }
}
