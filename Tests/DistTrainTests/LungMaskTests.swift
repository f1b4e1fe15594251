@testable import DistTrain
import Foundation
import Net
import XCTest

/// The lung mask (LungMask.swift), the energy shares and the occlusion (LungEnergy.swift).
final class LungMaskTests: XCTestCase {
    /// A lung-windowed slice drawn with known lungs: air outside (grey 20), a body ellipse of soft
    /// tissue (220) with a bright rim and spine (250), two dark lung ellipses (70) with bright vessels,
    /// and a consolidation as bright as tissue inside the right lung (the image's left). Noise +-8.
    static func slice(size S: Int = 128, seed: UInt64 = 5) -> (gray: [UInt8], lungs: [Bool], lesion: [Bool]) {
        var rng = SplitMix(seed)
        var gray = [UInt8](repeating: 0, count: S * S), lungs = [Bool](repeating: false, count: S * S), lesion = lungs
        let c = Double(S) / 2
        func e(_ x: Double, _ y: Double, _ cx: Double, _ cy: Double, _ a: Double, _ b: Double) -> Bool {
            (x - cx) * (x - cx) / (a * a) + (y - cy) * (y - cy) / (b * b) <= 1
        }
        for y in 0..<S { for x in 0..<S {
            let fx = Double(x) + 0.5, fy = Double(y) + 0.5, i = y * S + x
            var v = 20.0
            if e(fx, fy, c, c, 0.9 * c, 0.7 * c) { v = 250 }
            if e(fx, fy, c, c, 0.85 * c, 0.65 * c) { v = 220 }
            for side in [-1.0, 1.0] where e(fx, fy, c + side * 0.4 * c, c - 0.05 * c, 0.3 * c, 0.45 * c) { v = 70; lungs[i] = true }
            if e(fx, fy, c - 0.4 * c, c, 0.1 * c, 0.12 * c) { v = 220; lesion[i] = true }
            if e(fx, fy, c, c + 0.5 * c, 0.1 * c, 0.1 * c) { v = 250 }  // spine
            if lungs[i] && !lesion[i] && (x * 7 + y * 13) % 97 == 0 { v = 200 }  // vessels, single pixels
            gray[i] = UInt8(max(0, min(255, v + Double(Int(rng.next() % 17) - 8))))
        } }
        return (gray, lungs, lesion)
    }

    static func iou(_ a: [Bool], _ b: [Bool]) -> Double {
        Double(zip(a, b).filter { $0 && $1 }.count) / Double(max(1, zip(a, b).filter { $0 || $1 }.count))
    }

    func testSyntheticSliceFindsTheDrawnLungsWithTheLesionInside() {
        let S = 128, (gray, lungs, lesion) = Self.slice(size: S)
        let m = LungMask.mask(gray: gray, width: S, height: S)
        XCTAssertGreaterThan(Self.iou(m, lungs), 0.9)
        let lesionIn = zip(m, lesion).filter { $0 && $1 }.count, lesionAll = lesion.filter { $0 }.count
        XCTAssertGreaterThan(lesionAll, 50)
        XCTAssertEqual(lesionIn, lesionAll, "the consolidation, as bright as tissue, is a hole of the lung and filled")
        XCTAssertFalse(m[0] || m[S * S - 1], "the air outside the body is not lung")
        XCTAssertFalse(m[(S / 2) * S + S / 2], "the mediastinum between the lungs is not lung")
        // Cropped inside the chest wall (MedSeg's slices): the lungs touch the image's edge and are kept.
        let x0 = S / 5, w = S - 2 * x0
        func cropped<T>(_ a: [T]) -> [T] { (0..<(w * S)).map { a[($0 / w) * S + x0 + $0 % w] } }
        let crop = cropped(gray), cropLungs = cropped(lungs)
        XCTAssertTrue((0..<S).contains { cropLungs[$0 * w] }, "the drawn lung reaches the cropped edge")
        XCTAssertGreaterThan(Self.iou(LungMask.mask(gray: crop, width: w, height: S), cropLungs), 0.9)
    }

    func testFlatSlicesHaveNoLungs() {
        for v: UInt8 in [0, 90, 255] {
            XCTAssertFalse(LungMask.mask(gray: [UInt8](repeating: v, count: 40 * 30), width: 40, height: 30).contains(true))
        }
    }

    func testDilationAndClosingByADisc() {
        let W = 9, H = 7
        var m = [Bool](repeating: false, count: W * H)
        m[3 * W + 4] = true
        let d = LungMask.dilated(m, radius: 2, width: W, height: H)
        // A disc of radius 2: 13 pixels (x^2 + y^2 <= 4).
        XCTAssertEqual(d.filter { $0 }.count, 13)
        XCTAssertTrue(d[1 * W + 4] && d[3 * W + 2] && d[2 * W + 3] && !d[1 * W + 3])
        // Two blocks (rows 1-5) a 1-pixel gap apart: the closing (a plus, radius 1) fills the gap but at its
        // two ends, where the disc fits from above and below; the blocks' pixels at the image's edge stay.
        var two = [Bool](repeating: false, count: W * H)
        for y in 1..<(H - 1) { for x in 0..<W where x != 4 { two[y * W + x] = true } }
        var expected = two
        for y in 2..<(H - 2) { expected[y * W + 4] = true }
        XCTAssertEqual(LungMask.closing(two, radius: 1, W, H), expected)
    }

    func testEnergyOfTheMaskItselfIsOneAndOfAUniformMapTheAreaShare() {
        let S = 64, (gray, _, _) = Self.slice(size: S)
        let mask = LungMask.mask(gray: gray, width: S, height: S)
        let area = Double(mask.filter { $0 }.count) / Double(S * S)
        XCTAssertGreaterThan(area, 0.2)
        let own = LungEnergy.score(method: "mask", maps: [mask.map { $0 ? 1 : 0 }], masks: [mask], height: S)
        XCTAssertEqual(own.insideLungs, 1, accuracy: 1e-12)
        XCTAssertEqual(own.lungArea, area, accuracy: 1e-12)
        let flat = [Float](repeating: 0.3, count: S * S), zeros = [Float](repeating: 0, count: S * S)
        let uniform = LungEnergy.score(method: "uniform", maps: [flat, zeros], masks: [mask, mask], height: S)
        XCTAssertEqual(uniform.images, 1, "a map of zeros is left out")
        XCTAssertEqual(uniform.insideLungs, area, accuracy: 1e-6)
        XCTAssertEqual(uniform.bottomRows, uniform.bottomArea, accuracy: 1e-6)
        XCTAssertEqual(uniform.bottomArea, 10.0 / 64, "15 % of 64 rows, rounded")
        // Batches pooled: the means weighted by their maps.
        let both = LungEnergy.pooled([own, uniform, LungEnergy.score(method: "none", maps: [zeros], masks: [mask], height: S)])
        XCTAssertEqual(both.images, 2)
        XCTAssertEqual(both.insideLungs, (1 + area) / 2, accuracy: 1e-6)
        // All energy in the last row: all of it in the bottom rows, none in the lungs (the drawn lungs end above).
        let lastRow = (0..<(S * S)).map { $0 >= S * (S - 1) ? Float(1) : 0 }
        let low = LungEnergy.score(method: "low", maps: [lastRow], masks: [mask], height: S)
        XCTAssertEqual(low.bottomRows, 1, accuracy: 1e-12)
        XCTAssertEqual(low.insideLungs, 0)
    }

    func testOcclusionKeepsTheLungsAndSetsTheRestToTheDarkestGrey() {
        let S = 64, (gray, lungs, _) = Self.slice(size: S)
        let mean: [Float] = [0.5, 0.4, 0.3], std: [Float] = [0.25, 0.2, 0.3]
        let x = Tensor([2, 3, S, S])
        for k in 0..<2 { for c in 0..<3 { for i in 0..<(S * S) {
            let g = k == 0 ? gray[i] : gray[(S * S - 1) - i]  // the second image upside down and mirrored
            x.data[(k * 3 + c) * S * S + i] = (Float(g) / 255 - mean[c]) / std[c]
        } } }
        let before = x.array
        let kept = LungOcclusion.occludeOutsideLungs(x, mean: mean, std: std, dilation: 2)
        let mask = LungMask.dilated(LungMask.mask(gray: gray, width: S, height: S), radius: 2, width: S, height: S)
        for k in 0..<2 {
            XCTAssertEqual(kept[k], Double(mask.filter { $0 }.count) / Double(S * S), accuracy: 1e-12)
            for c in 0..<3 {
                let plane = (k * 3 + c) * S * S
                let darkest = before[plane..<(plane + S * S)].min()!
                XCTAssertEqual(darkest, (Float(gray.min()!) / 255 - mean[c]) / std[c], accuracy: 1e-6)
                for i in 0..<(S * S) {
                    let j = k == 0 ? i : (S * S - 1) - i  // the pixel of the first image's frame
                    if mask[j] { XCTAssertEqual(x.data[plane + i], before[plane + i]) } else { XCTAssertEqual(x.data[plane + i], darkest) }
                }
                let lungCentre = k == 0 ? (S / 2) * S + S / 5 + 1 : (S * S - 1) - ((S / 2) * S + S / 5 + 1)
                XCTAssertTrue(lungs[k == 0 ? lungCentre : (S * S - 1) - lungCentre])
                XCTAssertEqual(x.data[plane + lungCentre], before[plane + lungCentre], "a drawn lung pixel is kept")
                XCTAssertEqual(x.data[plane], darkest, "the corner (air) becomes the background")
            }
        }
    }

    /// `--lung-field` (TrainConfig.lungField): the classifier's input from images, and the batches of a
    /// data set it makes for eval and training, are the plain ones with the occlusion applied; off, untouched.
    func testLungFieldRunsSeeOnlyTheOccludedImage() throws {
        let S = 64, (gray, _, _) = Self.slice(size: S)
        var c = TrainConfig()
        c.imageSize = S; c.width = 4; c.inChannels = 1; c.numClasses = 2; c.mean = [0.3]; c.std = [0.2]
        let net = ResNet(c.netConfig, engine: Engine(backend: .fromEnvironment(), precision: .fp32))
        net.initialize(seed: 7)
        let image = RasterImage(width: S, height: S, channels: 1, pixels: gray)
        let plain = Classifier(net: net, config: c).tensor([image])
        c.lungField = true
        let lung = Classifier(net: net, config: c)
        XCTAssertTrue(lung.lungField)
        let expected = Tensor(plain.shape)
        for i in 0..<plain.count { expected.data[i] = plain.data[i] }
        let kept = LungOcclusion.occludeOutsideLungs(expected, mean: [0.3], std: [0.2], dilation: LungOcclusion.dilation(size: S))
        XCTAssertTrue(kept[0] > 0.2 && kept[0] < 0.9, "the slice has lungs and a background: \(kept)")
        XCTAssertEqual(lung.tensor([image]).array, expected.array)
        XCTAssertNotEqual(plain.array, expected.array)
        // The batches of a data set: the same occlusion, in the maker eval and training use.
        let dir = makeTempDir("lung-field")
        try RasterImage(width: S, height: S, channels: 1, pixels: gray).writePNG(dir + "/a.png")
        try RasterImage(width: S, height: S, channels: 1, pixels: gray.reversed()).writePNG(dir + "/b.png")
        for split in ["train", "val", "test"] {
            try "filename,label\na.png,1\nb.png,0\n".write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8)
        }
        try DatasetSource.detect(dir).prepare(out: dir + "/data.h5")
        let ds = try Dataset(path: dir + "/data.h5")
        var maker = lung.batchMaker(for: ds)
        XCTAssertTrue(maker.lungField)
        let x = Tensor()
        _ = try maker.batch(ds, [0, 1], into: x, seed: 0, augmentEpoch: 3)
        maker.lungField = false
        let y = Tensor()
        _ = try maker.batch(ds, [0, 1], into: y, seed: 0, augmentEpoch: 3)
        LungOcclusion.occludeOutsideLungs(y, mean: maker.mean, std: maker.std, dilation: LungOcclusion.dilation(size: S))
        XCTAssertEqual(x.array, y.array)
        // config.json keeps it: eval and predict of the run apply it again; export, whose graph would not, refuses.
        XCTAssertTrue(try JSONDecoder().decode(TrainConfig.self, from: JSONEncoder().encode(c)).lungField)
        c.run = dir; c.data = dir + "/data.h5"; c.classNames = ["NORMAL", "COVID"]
        try c.save(to: dir + "/config.json")
        XCTAssertThrowsError(try Export.parse([dir, "--onnx", dir + "/m.onnx"]).run()) { e in
            XCTAssertTrue("\(e)".contains("--lung-field"), "\(e)")
        }
    }

    /// On MedSeg's slices (another hospital), nearly all of the radiologist's infection mask lies inside
    /// the lung mask: every 7th slice here (14 of 98, debug build); all 98 are in the commit message.
    func testMedSegLesionsFallInsideTheLungMask() throws {
        let root = packageRoot + "/../shared/data/medseg-covid-lesions"
        guard FileManager.default.fileExists(atPath: root + "/slices.csv") else { throw XCTSkip("shared data sets not present") }
        let rows = try CSV.read(root + "/slices.csv").dropFirst().map(\.fields)  // filename,infection_mask,classes_mask,label
        var inside = 0, total = 0
        for row in rows.enumerated().filter({ $0.offset % 7 == 0 }).map(\.element) {
            let image = try RasterImage.read(root + "/" + row[0]).converted(channels: 1)
            let infection = try RasterImage.read(root + "/" + row[1]).converted(channels: 1)
            let m = LungMask.mask(gray: image.pixels, width: image.width, height: image.height)
            for (p, q) in zip(infection.pixels, m) where p > 127 { total += 1; if q { inside += 1 } }
        }
        XCTAssertGreaterThan(total, 1000)
        XCTAssertGreaterThan(Double(inside) / Double(total), 0.92, "\(inside) of \(total) lesion pixels inside")
    }
}
