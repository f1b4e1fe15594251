@testable import DistTrain
import Foundation
import XCTest

/// `eval RUN --data SET` (external sets of any form, size and mode) and the
/// localisation of maps against lesion masks, on cases with known answers.
final class ExternalEvalTests: XCTestCase {
    let fixtures = packageRoot + "/Tests/Fixtures/"

    // MARK: localisation, known answers

    /// An 8x8 slice with a 2x3 lesion (6 of 64 pixels).
    static let lesion: [Bool] = (0..<64).map { i in (2...3).contains(i / 8) && (4...6).contains(i % 8) }

    func testAMapEqualToTheMaskScoresOneAndItsInverseZero() throws {
        let mask = ExternalEvalTests.lesion, area = 6.0 / 64
        let same = try XCTUnwrap(RankedMap(mask.map { $0 ? 1 : 0 }).score(mask))
        XCTAssertEqual(same, SliceLocalization(energyInside: 1, areaShare: area, pointing: 1, pixelAUC: 1))
        let inverse = try XCTUnwrap(RankedMap(mask.map { $0 ? 0 : 1 }).score(mask))
        XCTAssertEqual(inverse, SliceLocalization(energyInside: 0, areaShare: area, pointing: 0, pixelAUC: 0))
        // A graded map peaking inside: AUC 1 as long as every lesion pixel outranks every other one.
        let graded = try XCTUnwrap(RankedMap((0..<64).map { mask[$0] ? Float(2 + $0 % 3) : Float($0 % 2) }).score(mask))
        XCTAssertEqual(graded.pixelAUC, 1)
        XCTAssertEqual(graded.pointing, 1)
        // A slice without lesion is not scored.
        XCTAssertNil(RankedMap(mask.map { $0 ? 1 : 0 }).score([Bool](repeating: false, count: 64)))
    }

    func testAUniformOrEmptyMapScoresChance() throws {
        let mask = ExternalEvalTests.lesion, area = 6.0 / 64
        for value: Float in [0.5, 0, .nan] {
            let s = try XCTUnwrap(RankedMap([Float](repeating: value, count: 64)).score(mask))
            XCTAssertEqual(s.energyInside, area, accuracy: 1e-12, "energy share = area share (\(value))")
            XCTAssertEqual(s.pointing, area, accuracy: 1e-12, "the tied maxima spread over the image (\(value))")
            XCTAssertEqual(s.pixelAUC, 0.5, accuracy: 1e-12, "all ties (\(value))")
        }
    }

    /// The pixel AUC is the Mann-Whitney AUC of the map's values, lesion pixels positive, ties averaged.
    func testPixelAUCIsMannWhitneyWithTies() throws {
        var rng = SplitMix(7)
        let mask = (0..<100).map { _ in rng.next() % 4 == 0 }
        let map = (0..<100).map { i in Float(rng.next() % 5) + (mask[i] ? 1 : 0) }  // coarse values: many ties
        let s = try XCTUnwrap(RankedMap(map).score(mask))
        XCTAssertEqual(s.pixelAUC, SplitMetrics.rocAUC(labels: mask.map { $0 ? 1 : 0 }, scores: map.map(Double.init)), accuracy: 1e-12)
        // By hand on four pixels: lesion {3, 1}, others {1, 0}: pairs 3>1, 3>0, 1=1 (1/2), 1>0 -> 3.5 / 4.
        XCTAssertEqual(RankedMap([3, 1, 1, 0]).score([true, true, false, false])?.pixelAUC, 0.875)
    }

    func testMeansRatioIntervalsPerClassAndTheRegionHook() throws {
        let mask = ExternalEvalTests.lesion, area = 6.0 / 64
        let exact = mask.map { Float($0 ? 1 : 0) }, uniform = [Float](repeating: 1, count: 64)
        let none = [Bool](repeating: false, count: 64)
        let rows = Localization.table(maps: [("exact", [exact, exact, exact]), ("uniform", [uniform, uniform, uniform])],
                                      lesions: [("lesion", [mask, mask, none]), ("ground-glass", [mask, nil, nil])], seed: 3)
        XCTAssertEqual(rows.map { "\($0.method)/\($0.lesion ?? "")" }, ["exact/lesion", "exact/ground-glass", "uniform/lesion", "uniform/ground-glass"])
        XCTAssertEqual(rows.map(\.images), [2, 1, 2, 1], "slices with an empty or no mask are left out")
        let exactRow = rows[0], uniformRow = rows[2]
        XCTAssertEqual(exactRow.energyInside, 1)
        XCTAssertEqual(exactRow.chance, area, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(exactRow.ratio), 64.0 / 6, accuracy: 1e-9)
        XCTAssertEqual(uniformRow.energyInside, area, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(uniformRow.ratio), 1, accuracy: 1e-9)
        XCTAssertEqual(uniformRow.pixelAUC, 0.5)
        // Identical slices: every bootstrap draw gives the same figures.
        let i = try XCTUnwrap(exactRow.intervals?["pointing_game"])
        XCTAssertEqual([i.lower, i.upper], [1, 1])
        // Slices that differ: the interval spans their spread and holds the mean.
        let mixed = Localization.table(maps: [("m", [exact, uniform, exact, uniform, exact, uniform])],
                                       lesions: [("lesion", Array(repeating: mask, count: 6))], seed: 1)[0]
        let e = try XCTUnwrap(mixed.intervals?["energy_inside"])
        XCTAssertEqual(mixed.energyInside, (1 + area) / 2, accuracy: 1e-12)
        XCTAssertTrue(e.lower < mixed.energyInside && mixed.energyInside < e.upper && e.lower >= area && e.upper <= 1, "\(e)")
        // The region hook: inside a region of 16 pixels holding the lesion, the area share is 6/16 and a uniform
        // map's energy share follows it; the map equal to the mask still scores 1.
        let region = (0..<64).map { i in (2...3).contains(i / 8) }
        let within = Localization.table(maps: [("exact", [exact]), ("uniform", [uniform])], lesions: [("lesion", [mask])],
                                        within: [region], regionName: "lung field", seed: 1)
        XCTAssertEqual(within.map(\.chance), [6.0 / 16, 6.0 / 16])
        XCTAssertEqual(within.map(\.energyInside), [1, 6.0 / 16])
        XCTAssertEqual(within.map(\.region), ["lung field", "lung field"])
        // The old entry point (0/255 masks) keeps its answers.
        let old = Localization.score(method: "m", maps: [[0.1, 0.9, 0, 0], [1, 0, 0, 0]], masks: [[0, 255, 0, 0], [0, 255, 0, 0]])
        XCTAssertEqual([old.pointingGame, old.chance], [0.5, 0.25])
        XCTAssertEqual(old.energyInside, 0.45, accuracy: 1e-6)
    }

    // MARK: images of any mode and size

    /// Gray, gray + alpha, RGB, RGBA, palette (with and without tRNS) PNGs and an RGB JPEG read to
    /// what they show (alpha on black), and become the run's gray input at any size.
    func testEveryImageModeReads() throws {
        let dir = makeTempDir("modes")
        let palette: [UInt8] = [0, 0, 0, 200, 100, 50, 10, 250, 30]
        let cases: [(String, [UInt8], [UInt8])] = [
            ("gray", png(width: 3, height: 2, colorType: 0, pixels: [0, 50, 100, 150, 200, 250]), [0, 50, 100, 150, 200, 250]),
            ("gray-alpha", png(width: 2, height: 1, colorType: 4, pixels: [200, 255, 200, 51]), [200, 40]),
            ("rgb", png(width: 1, height: 1, colorType: 2, pixels: [200, 100, 50]), [200, 100, 50]),
            ("rgba", png(width: 2, height: 1, colorType: 6, pixels: [200, 100, 50, 255, 200, 100, 50, 0]), [200, 100, 50, 0, 0, 0]),
            ("palette", png(width: 3, height: 1, colorType: 3, pixels: [0, 1, 2], palette: palette), palette),
            ("palette-trns", png(width: 2, height: 1, colorType: 3, pixels: [1, 2], palette: palette, transparency: [255, 255, 0]),
             [200, 100, 50, 0, 0, 0]),
        ]
        for (name, bytes, want) in cases {
            try write(bytes, to: "\(dir)/\(name).png")
            let image = try RasterImage.read("\(dir)/\(name).png")
            XCTAssertEqual(image.pixels, want, name)
            let input = image.converted(channels: 1).resized(width: 32, height: 32)
            XCTAssertEqual([input.width, input.height, input.channels], [32, 32, 1], name)
        }
        let jpeg = try RasterImage.read(fixtures + "tiny-rgb.jpg")
        XCTAssertEqual([jpeg.width, jpeg.height, jpeg.channels], [24, 16, 3])
        // Red rises left to right, green top to bottom (make_image_fixtures.py), within JPEG's error.
        XCTAssertLessThan(jpeg.pixels[0], jpeg.pixels[23 * 3])
        XCTAssertLessThan(jpeg.pixels[1], jpeg.pixels[(15 * 24) * 3 + 1])
    }

    /// Masks keep their values (nearest neighbour) on the grid `resized` uses.
    func testNearestNeighbourResizeKeepsLabels() {
        let m = RasterImage(width: 3, height: 2, channels: 1, pixels: [0, 1, 2, 2, 1, 0])
        XCTAssertEqual(m.resizedNearest(width: 6, height: 4).pixels,
                       [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 2, 2, 1, 1, 0, 0, 2, 2, 1, 1, 0, 0])
        XCTAssertEqual(m.resizedNearest(width: 3, height: 1).pixels, [2, 1, 0], "the lower row's centre is nearer")
        XCTAssertEqual(Set(m.resizedNearest(width: 7, height: 5).pixels), [0, 1, 2], "no blended values")
    }

    // MARK: external sets

    /// The forms of SET and what is refused, one line naming the culprit.
    func testExternalSetFormsAndRefusals() throws {
        let names = ["NORMAL", "COVID"], dir = makeTempDir("forms")
        try FileManager.default.createDirectory(atPath: dir + "/img", withIntermediateDirectories: true)
        for k in 0..<3 { try RasterImage(width: 20 + k, height: 10, channels: 1, pixels: [UInt8](repeating: 90, count: (20 + k) * 10))
            .writePNG("\(dir)/img/\(k).png") }
        try "label,extra,filename\ncovid,x,img/0.png\n0,y,img/1.png\n1.0,z,img/2.png\n".write(toFile: dir + "/set.csv", atomically: true, encoding: .utf8)
        for given in [dir, dir + "/set.csv"] {
            let s = try ExternalSet.open(given, classNames: names, window: .lung)
            XCTAssertEqual(s.form, .csv)
            XCTAssertEqual(s.samples.map(\.label), [1, 0, 1], "labels by name (any case) or index, columns in any order")
            XCTAssertEqual(s.masks, [ExternalSet.LesionMasks](repeating: .init(), count: 3))
        }
        try "filename,label\nimg/0.png,pneumonia\n".write(toFile: dir + "/bad.csv", atomically: true, encoding: .utf8)
        assertError(try ExternalSet.open(dir, classNames: names, window: .lung), contains: "2 CSVs", "bad.csv", "set.csv")
        assertError(try ExternalSet.open(dir + "/bad.csv", classNames: names, window: .lung), contains: "bad.csv line 2", "'pneumonia'", "'COVID'")
        try "filename,label\n../img/0.png,1\n".write(toFile: dir + "/out.csv", atomically: true, encoding: .utf8)
        assertError(try ExternalSet.open(dir + "/out.csv", classNames: names, window: .lung), contains: "out.csv line 2", "leaves the data folder")
        // A mask of another size than its image is refused, naming both.
        try RasterImage(width: 5, height: 5, channels: 1, pixels: [UInt8](repeating: 255, count: 25)).writePNG(dir + "/img/m.png")
        try "filename,label,infection_mask\nimg/0.png,1,img/m.png\n".write(toFile: dir + "/masked.csv", atomically: true, encoding: .utf8)
        let masked = try ExternalSet.open(dir + "/masked.csv", classNames: names, window: .lung)
        assertError(try masked.lesionMasks(0, size: 32), contains: "img/m.png", "5x5", "20x10")
        // Class folders, named as the run's classes in any case; an unknown one is refused by name.
        let folders = makeTempDir("folders")
        for c in ["covid", "Normal"] {
            try FileManager.default.createDirectory(atPath: "\(folders)/\(c)", withIntermediateDirectories: true)
            try write(png(width: 2, height: 2, colorType: 0, pixels: [1, 2, 3, 4]), to: "\(folders)/\(c)/a.png")
        }
        XCTAssertEqual(try ExternalSet.open(folders, classNames: names, window: .lung).samples.map(\.label), [0, 1], "Normal/, covid/")
        try FileManager.default.createDirectory(atPath: folders + "/viral", withIntermediateDirectories: true)
        assertError(try ExternalSet.open(folders, classNames: names, window: .lung), contains: "class folder 'viral'", "'NORMAL', 'COVID'")
        assertError(try ExternalSet.open(dir + "/img/0.png", classNames: names, window: .lung), contains: "not a .csv")
    }

    /// A DICOM study with labels.csv: listed by MedicalSource, labels in the run's classes, prepared at the
    /// run's size through the run's window.
    func testDICOMStudyIsPreparedWithTheRunsWindow() throws {
        let dir = makeTempDir("study")
        try Phantom.writeStudy(to: dir, nifti: false, patients: 4, slices: 2, size: 40, seed: 5)
        let set = try ExternalSet.open(dir, classNames: ["normal", "covid"], window: .mediastinum)
        XCTAssertEqual(set.form, .medical)
        XCTAssertEqual(set.samples.map(\.label).sorted(), [0, 0, 0, 0, 1, 1, 1, 1])
        let out = try set.prepare(out: dir + "/ext.h5", size: 32, channels: 1)
        let ds = try Dataset(path: out.path)
        XCTAssertEqual([ds.count, ds.channels, ds.height, ds.width], [8, 1, 32, 32])
        XCTAssertEqual(ds.classNames, ["normal", "covid"])
        XCTAssertEqual(try ds.file.stringAttribute("window"), Window.mediastinum.argument)
        XCTAssertTrue(try set.prepare(out: dir + "/ext.h5", size: 32, channels: 1).reused, "the same study is not prepared twice")
        XCTAssertFalse(try set.prepare(out: dir + "/ext.h5", size: 40, channels: 1).reused, "another geometry is")
        assertError(try ExternalSet.open(dir, classNames: ["a", "b"], window: .lung), contains: "labels.csv", "'NORMAL'", "'a'")
    }

    // MARK: end to end

    /// RUN/external/NAME/summary.json (NaN written as "nan").
    func summary(_ dir: String) throws -> ExternalSummary {
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try dec.decode(ExternalSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
    }

    /// A 1-epoch run of width 4 at 32 px on the synthetic CSV set (classes NORMAL, COVID), made once.
    static var trained: String?
    func trainedRun() throws -> String {
        if let r = ExternalEvalTests.trained { return r }
        let run = makeTempDir("external-run") + "/run"
        let data = preparedSyntheticSet("external-data", train: 8, val: 4, test: 4)
        let t = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--no-eval"], timeout: 120)
        XCTAssertEqual(t.status, 0, t.output)
        ExternalEvalTests.trained = run
        return run
    }

    /// A set of slices of other sizes and modes (gray, gray + alpha, RGB, RGBA, palette PNGs, an RGB
    /// JPEG), COVID only, with MedSeg's mask columns.
    func writeOneClassSet(_ dir: String) throws {
        let fm = FileManager.default
        for sub in ["images", "infection", "classes"] { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        var rng = SplitMix(11)
        func noise(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(40 + rng.next() % 160) } }
        var palette: [UInt8] = []
        for v in 0..<256 { palette += [UInt8(v), UInt8(255 - v), UInt8(v / 2)] }
        let images: [(String, Int, Int, [UInt8])] = try [
            ("gray.png", 40, 30, RasterImage(width: 40, height: 30, channels: 1, pixels: noise(1200)).pngBytes()),
            ("gray-alpha.png", 30, 30, png(width: 30, height: 30, colorType: 4, pixels: noise(1800))),
            ("rgb.png", 50, 20, RasterImage(width: 50, height: 20, channels: 3, pixels: noise(3000)).pngBytes()),
            ("rgba.png", 36, 48, png(width: 36, height: 48, colorType: 6, pixels: noise(36 * 48 * 4))),
            ("palette.png", 33, 27, png(width: 33, height: 27, colorType: 3, pixels: noise(33 * 27), palette: palette)),
            ("rgb.jpg", 24, 16, [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "tiny-rgb.jpg")))),
        ]
        var csv = "filename,infection_mask,classes_mask,label,source\n"
        for (k, (name, w, h, bytes)) in images.enumerated() {
            try write(bytes, to: "\(dir)/images/\(name)")
            // A lesion in the left half: ground glass above, consolidation below (none on the first slice).
            let classes = (0..<(w * h)).map { i -> UInt8 in i % w >= w / 2 ? 0 : (i / w < h / 2 || k == 0 ? 1 : 2) }
            try RasterImage(width: w, height: h, channels: 1, pixels: classes.map { $0 > 0 ? 255 : 0 }).writePNG("\(dir)/infection/\(k).png")
            try RasterImage(width: w, height: h, channels: 1, pixels: classes).writePNG("\(dir)/classes/\(k).png")
            csv += "images/\(name),infection/\(k).png,classes/\(k).png,\(k == 2 ? "COVID" : "1"),hospital b\n"
        }
        try csv.write(toFile: dir + "/slices.csv", atomically: true, encoding: .utf8)
    }

    func testOneClassSetReportsSensitivityOnlyAndLocalises() throws {
        let run = try trainedRun(), set = makeTempDir("one-class")
        try writeOneClassSet(set)
        let r = try runCommand([disttrainBinary, "eval", run, "--data", set + "/slices.csv", "--cams", "gradcam", "--threads", "1"], timeout: 180)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("one class only (COVID, 6 images): sensitivity"), r.output)
        XCTAssertFalse(r.output.contains("nan"), "no undefined figure is printed: \(r.output)")
        let name = (set as NSString).lastPathComponent, out = "\(run)/external/\(name)"
        let s = try summary(out)
        let one = try XCTUnwrap(s.oneClass)
        XCTAssertEqual([one.figure, one.className], ["sensitivity", "COVID"])
        XCTAssertEqual(one.images, 6)
        XCTAssertTrue(one.interval.contains(one.value) && one.interval.lower >= 0 && one.interval.upper <= 1)
        XCTAssertNil(s.evidence)
        XCTAssertTrue(s.metrics.auc.isNaN && s.metrics.specificity.isNaN)
        XCTAssertEqual(s.classCounts, [0, 6])
        XCTAssertEqual(s.form, .csv)
        XCTAssertTrue(s.note.contains("one class only"))
        // predictions.csv: the columns of the run's report/predictions.csv, split 'external'.
        let predictions = try CSV.read(out + "/predictions.csv")
        XCTAssertEqual(predictions[0].fields, ["split", "index", "file", "label", "p_covid"])
        XCTAssertEqual(predictions.dropFirst().map { $0.fields[0] }, Array(repeating: "external", count: 6))
        XCTAssertEqual(predictions[3].fields[2], "images/rgb.png")
        // Localisation: every method (gradcam and the input gradient) against each kind of lesion.
        let all = try XCTUnwrap(s.localization)
        // Each method is scored over the whole image, then again within each slice's lung mask (region "lungs").
        XCTAssertEqual(all.map { $0.region ?? "image" }, ["image", "image", "image", "lungs", "lungs", "lungs",
                                                          "image", "image", "image", "lungs", "lungs", "lungs"])
        let l = all.filter { $0.region == nil }
        for (whole, lung) in zip(l, all.filter { $0.region == Localization.lungRegion }) {
            XCTAssertEqual([whole.method, whole.lesion], [lung.method, lung.lesion])
            XCTAssertLessThanOrEqual(lung.images, whole.images, "a slice whose lesion lies outside its lung mask is not scored there")
        }
        XCTAssertEqual(l.map { "\($0.method)/\($0.lesion ?? "")" }, ["gradcam/lesion", "gradcam/ground-glass", "gradcam/consolidation",
                                                                      "input-gradient/lesion", "input-gradient/ground-glass",
                                                                      "input-gradient/consolidation"])
        XCTAssertEqual(l.map(\.images), [6, 6, 5, 6, 6, 5], "slice 0 has no consolidation")
        // The masks' areas: the left half; its upper half ground glass (all of it on slice 0), the lower consolidation.
        let areas = ["lesion": 0.5, "ground-glass": 1.75 / 6, "consolidation": 0.25]
        for row in l {
            XCTAssertEqual(row.chance, areas[row.lesion ?? ""] ?? .nan, accuracy: 0.04, "\(row.lesion ?? "")")
            XCTAssertTrue((0...1).contains(row.energyInside) && (0...1).contains(row.pointingGame), "\(row)")
        }
        let table = try CSV.read(out + "/localization.csv")
        XCTAssertEqual(table.count, 13)
        XCTAssertEqual(Array(table[0].fields.prefix(7)), ["method", "lesion", "region", "slices", "energy_inside", "energy_inside_lo",
                                                          "energy_inside_hi"])
        XCTAssertEqual(table.dropFirst().map { $0.fields[2] }, all.map { $0.region ?? "image" })
        let html = try String(contentsOfFile: out + "/index.html", encoding: .utf8)
        XCTAssertTrue(html.contains("one class only") && html.contains("Localisation of the lesions"), html)
        for file in ["reliability.png", "confusion.png", "cam-grid.png", "images.h5"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/\(file)"), file)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/roc.png"), "no ROC of one class")
    }

    func testTwoClassFoldersGiveIntervalsAndUnknownClassesAreRefused() throws {
        let run = try trainedRun(), set = makeTempDir("two-class")
        var rng = SplitMix(3)
        for (c, n) in [("covid", 3), ("Normal", 3)] {
            try FileManager.default.createDirectory(atPath: "\(set)/\(c)", withIntermediateDirectories: true)
            for i in 0..<n {
                try RasterImage(width: 48, height: 40, channels: 3, pixels: (0..<(48 * 40 * 3)).map { _ in UInt8(rng.next() % 256) })
                    .writePNG("\(set)/\(c)/\(i).png")
            }
        }
        let args = [disttrainBinary, "eval", run, "--data", set, "--name", "both", "--cams", "none", "--threads", "1"]
        let r = try runCommand(args, timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("accuracy 95 % interval"), r.output)
        let out = run + "/external/both"
        let s = try summary(out)
        XCTAssertNil(s.oneClass)
        XCTAssertEqual(s.form, .classFolders)
        XCTAssertEqual(s.classCounts, [3, 3])
        XCTAssertNotNil(s.evidence?.intervals["auc"])
        XCTAssertNil(s.localization, "no masks, no localisation")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/roc.png"))
        XCTAssertTrue(try runCommand(args, timeout: 120).output.contains("prepared before"), "the prepared set is reused")
        // An unknown class folder: one line naming it.
        try FileManager.default.createDirectory(atPath: set + "/pneumonia", withIntermediateDirectories: true)
        let bad = try runCommand(args, timeout: 60)
        XCTAssertEqual(bad.status, 1, bad.output)
        let lines = bad.output.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, bad.output)
        XCTAssertTrue(bad.output.contains("class folder 'pneumonia'") && bad.output.contains("'NORMAL', 'COVID'"), bad.output)
        // Names that would leave RUN/external/.
        for name in ["../x", "a/b", ".."] {
            let n = try runCommand([disttrainBinary, "eval", run, "--data", set, "--name", name], timeout: 30)
            XCTAssertEqual(n.status, 64, n.output)
            XCTAssertTrue(n.output.contains("--name"), n.output)
        }
    }

    /// Under mpirun rank 0 alone evaluates; the other rank ends without waiting for it for ever.
    func testUnderMpirunRankZeroEvaluatesAlone() throws {
        try XCTSkipUnless(mpirunAvailable, "mpirun not installed (launch/setup installs openmpi-bin)")
        let run = try trainedRun(), set = makeTempDir("mpi-set")
        try writeOneClassSet(set)
        let r = try runCommand(["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none", disttrainBinary, "eval", run, "--data", set,
                                "--name", "mpi", "--cams", "gradcam", "--threads", "1"], timeout: 180)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.output.components(separatedBy: "external report:").count, 2, "one rank reports: \(r.output)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/external/mpi/localization.csv"))
    }
}

extension RasterImage {
    /// The image as PNG bytes (through writePNG).
    func pngBytes() throws -> [UInt8] {
        let path = makeTempDir("png") + "/x.png"
        try writePNG(path)
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
