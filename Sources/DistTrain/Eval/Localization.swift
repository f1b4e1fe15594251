import Cams
import Foundation
import Net

/// How well saliency maps point at known lesions (a radiologist's masks, a
/// phantom's), per method and kind of lesion, over the slices whose mask is
/// not empty:
/// - energy inside: the share of the map's sum inside the mask (the
///   "energy-based pointing game" of Score-CAM, Wang et al. 2020, sec. 4.2),
///   against the mask's share of the image (`chance`, what a uniform map
///   scores) and their ratio (mean energy share / mean area share);
/// - the pointing game (Zhang et al. 2018): is the map's maximum inside;
/// - pixel AUC: the map as a per-pixel lesion detector, the ROC AUC by
///   Mann-Whitney (ties at their mid-rank).
/// A map that says nothing of position (all zero, or constant) scores what a
/// uniform map does: energy share = area share, pointing game = the area share
/// of its tied maxima, AUC 1/2; so a degenerate map sits at chance, never at 0 or NaN.
/// Means are over slices, with 95 % bootstrap intervals that resample slices.
public struct Localization: Codable, Sendable {
    public var method: String
    /// Slices scored: those with a non-empty mask (inside the region).
    public var images: Int
    public var pointingGame: Double
    public var energyInside: Double
    /// The mask's mean share of the image (of the region): a uniform map's energy share.
    public var chance: Double
    /// The kind of lesion: "lesion" (any), "ground-glass", "consolidation"; nil in older summaries.
    public var lesion: String? = nil
    /// energyInside / chance.
    public var ratio: Double? = nil
    public var pixelAUC: Double? = nil
    /// 95 % bootstrap intervals over slices, keyed by `figureNames`.
    public var intervals: [String: Interval]? = nil
    /// The region every figure is restricted to (a lung field, say); nil: the whole image.
    public var region: String? = nil

    /// The figures, in the order of localization.csv.
    public static let figureNames = ["energy_inside", "area_share", "ratio", "pointing_game", "pixel_auc"]

    /// The name the input gradient (|dL/dx|) is scored under beside the CAM methods.
    public static let inputGradientName = "input-gradient"
}

/// One slice's figures against one mask.
public struct SliceLocalization: Sendable, Equatable {
    public var energyInside: Double, areaShare: Double, pointing: Double, pixelAUC: Double
}

/// A map prepared once (its pixels in the region, their mid-ranks, sum and
/// maximum) and then scored against any number of masks of the same slice.
public struct RankedMap: Sendable {
    let pixels: [Int]
    let values: [Double]
    let ranks: [Double]
    let total: Double, peak: Double

    /// `region`: the pixels scored (nil: every pixel). Negative and non-finite
    /// values count as 0: energy is the map's positive part, as the CAMs' ReLU makes it.
    public init(_ map: [Float], region: [Bool]? = nil) {
        pixels = region.map { r in map.indices.filter { r[$0] } } ?? Array(map.indices)
        values = pixels.map { Double(map[$0]).isFinite ? max(Double(map[$0]), 0) : 0 }
        ranks = SplitMetrics.midranks(values)
        total = values.reduce(0, +)
        peak = values.max() ?? 0
    }

    /// The figures against `lesion` (one flag per pixel of the map); nil when no
    /// pixel of the region is inside. AUC is NaN when every one is (no negatives).
    public func score(_ lesion: [Bool]) -> SliceLocalization? {
        var n1 = 0, peaks = 0, peaksInside = 0
        var inside = 0.0, rankSum = 0.0
        for (k, i) in pixels.enumerated() {
            let isPeak = values[k] == peak
            if isPeak { peaks += 1 }
            guard lesion[i] else { continue }
            n1 += 1; inside += values[k]; rankSum += ranks[k]
            if isPeak { peaksInside += 1 }
        }
        guard n1 > 0 else { return nil }
        let n0 = pixels.count - n1, area = Double(n1) / Double(pixels.count)
        // Mann-Whitney U of the lesion pixels over the others, from their rank sum.
        let auc = n0 > 0 ? (rankSum - Double(n1) * Double(n1 + 1) / 2) / (Double(n1) * Double(n0)) : .nan
        return SliceLocalization(energyInside: total > 0 ? inside / total : area, areaShare: area,
                                 pointing: Double(peaksInside) / Double(peaks), pixelAUC: auc)
    }
}

extension Localization {
    /// The figures of one method against one kind of lesion from its slices'
    /// scores (nil: a slice without that lesion, left out), with `resamples`
    /// bootstrap draws of the slices (0: no intervals).
    public init(method: String, lesion: String?, region: String? = nil, slices: [SliceLocalization?],
                resamples: Int = RunEvidence.defaultResamples, seed: UInt64 = 0) {
        let s = slices.compactMap { $0 }
        let all = Localization.figures(s, Array(s.indices))
        self.init(method: method, images: s.count, pointingGame: all["pointing_game"]!, energyInside: all["energy_inside"]!,
                  chance: all["area_share"]!, lesion: lesion, ratio: all["ratio"], pixelAUC: all["pixel_auc"], region: region)
        guard resamples > 0, !s.isEmpty else { return }
        let draws = Stats.stratifiedResamples(labels: [Int](repeating: 0, count: s.count), count: resamples, seed: seed)
        let drawn = draws.map { Localization.figures(s, $0) }
        var out: [String: Interval] = [:]
        for name in Localization.figureNames { out[name] = Stats.percentileInterval(drawn.map { $0[name]! }) }
        intervals = out
    }

    /// Mean figures of the slices `at` (with repeats); the ratio is of the means. NaN AUCs are left out of their mean.
    static func figures(_ s: [SliceLocalization], _ at: [Int]) -> [String: Double] {
        func mean(_ f: (SliceLocalization) -> Double) -> Double {
            let v = at.map { f(s[$0]) }.filter { !$0.isNaN }
            return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
        }
        let energy = mean(\.energyInside), area = mean(\.areaShare)
        return ["energy_inside": energy, "area_share": area, "ratio": area > 0 ? energy / area : .nan,
                "pointing_game": mean(\.pointing), "pixel_auc": mean(\.pixelAUC)]
    }

    /// Every method against every kind of lesion, method by method: `maps[m].maps[slice]`
    /// and `lesions[l].masks[slice]` (nil: that slice has no such lesion), all of one size.
    /// `regions` restricts every figure to a region of each slice (nil, or a nil entry:
    /// the whole image): the hook for "within the lung field", under `regionName`.
    public static func table(maps: [(method: String, maps: [[Float]])], lesions: [(name: String, masks: [[Bool]?])],
                             within regions: [[Bool]?]? = nil, regionName: String? = nil,
                             resamples: Int = RunEvidence.defaultResamples, seed: UInt64 = 0) -> [Localization] {
        maps.flatMap { m in
            let ranked = m.maps.indices.map { k in RankedMap(m.maps[k], region: regions.flatMap { $0[k] }) }
            return lesions.map { l in
                Localization(method: m.method, lesion: l.name, region: regionName,
                             slices: ranked.indices.map { k in l.masks[k].flatMap { ranked[k].score($0) } }, resamples: resamples, seed: seed)
            }
        }
    }

    /// The region name of the figures scored within the lung mask.
    public static let lungRegion = "lungs"

    /// One method against masks where a value above 127 is lesion (the phantoms' 0/255 masks).
    public static func score(method: String, maps: [[Float]], masks: [[UInt8]], resamples: Int = RunEvidence.defaultResamples,
                             seed: UInt64 = 0) -> Localization {
        table(maps: [(method, maps)], lesions: [("lesion", masks.map { $0.map { $0 > 127 } })], resamples: resamples, seed: seed)[0]
    }

    /// Every CAM method of `cams` (class `target`'s maps at the explainer's layer) and the input
    /// gradient (|dL/dx| of class `target`, the largest over channels) on the images `images` of
    /// the evaluator's data set, as the network sees them, scored against `lesions` (per kind, each
    /// image's mask at the network's input size, or nil) and, with `regions`, within them.
    /// With `lungField`, every map is scored a second time within the slice's lung mask
    /// (`LungMask` of the image as the network sees it), in rows whose region is "lungs":
    /// the lesions' share of the lung field is then the chance level.
    /// Maps are made `batch` images at a time and ranked as they come; none is kept.
    static func measure(_ evaluator: Evaluator, _ explainer: CAMExplainer, images: [Int], lesions: [(name: String, masks: [[Bool]?])],
                        cams: [CAMKind], within regions: [[Bool]?]? = nil, regionName: String? = nil, lungField: Bool = false,
                        target: Int = 1, batch: Int = 8, seed: UInt64 = 0) throws -> [Localization] {
        let methods = cams.map(\.rawValue) + [inputGradientName]
        var scores = [[[SliceLocalization?]]](repeating: lesions.map { _ in [] }, count: methods.count)
        var inLungs = scores
        let maker = evaluator.batchMaker
        let x = Tensor()
        var start = 0
        while start < images.count {
            let chunk = Array(start..<min(start + batch, images.count))
            _ = try evaluator.batchMaker.batch(evaluator.dataset, chunk.map { images[$0] }, into: x, seed: 0, augmentEpoch: nil)
            let HW = x.shape[2] * x.shape[3], C = x.shape[1]
            var maps = cams.map { explainer.explain(x, method: $0, target: .classIndex(target)).maps }
            let g = inputGradient(net: evaluator.net, x: x, labels: chunk.map { _ in target })
            maps.append((0..<(chunk.count * HW)).map { p in
                let (n, i) = p.quotientAndRemainder(dividingBy: HW)
                return (0..<C).map { abs(g.data[(n * C + $0) * HW + i]) }.max() ?? 0
            })
            let lungs = lungField ? chunk.indices.map { LungOcclusion.lungMask(x, image: $0, mean: maker.mean, std: maker.std) } : []
            for (m, all) in maps.enumerated() {
                for (n, k) in chunk.enumerated() {
                    let map = Array(all[(n * HW)..<((n + 1) * HW)])
                    let ranked = RankedMap(map, region: regions.flatMap { $0[k] })
                    for (l, lesion) in lesions.enumerated() { scores[m][l].append(lesion.masks[k].flatMap { ranked.score($0) }) }
                    guard lungField else { continue }
                    let lung = RankedMap(map, region: lungs[n])
                    for (l, lesion) in lesions.enumerated() { inLungs[m][l].append(lesion.masks[k].flatMap { lung.score($0) }) }
                }
            }
            start += chunk.count
        }
        return methods.indices.flatMap { m in
            lesions.indices.map { l in
                Localization(method: methods[m], lesion: lesions[l].name, region: regionName, slices: scores[m][l], seed: seed)
            } + (lungField ? lesions.indices.map { l in
                Localization(method: methods[m], lesion: lesions[l].name, region: lungRegion, slices: inLungs[m][l], seed: seed)
            } : [])
        }
    }
}
