@testable import DistTrain
import Foundation
import XCTest

/// DICOM and NIfTI input: the committed fixtures (Tests/Fixtures/make_medical_fixtures.py)
/// read to exactly the HU arrays computed beside them, windowing against the
/// DICOM formula, named errors, series order, and the synthetic study through
/// prepare (patient-level splits), training and predict.
final class MedicalTests: XCTestCase {
    let dir = packageRoot + "/Tests/Fixtures/medical/"

    func testEveryTransferSyntaxAndStorageReadsToTheExpectedHU() throws {
        let expected = try HDF5File(dir + "expected.h5")
        let cases: [(String, String, String)] = [  // file, expected array, transfer syntax UID
            ("explicit_le_s16.dcm", "explicit_le_s16", "1.2.840.10008.1.2.1"),
            ("implicit_le_u12.dcm", "implicit_le_u12", "1.2.840.10008.1.2"),
            ("jpeg_lossless_u12.dcm", "jpeg_lossless_u12", "1.2.840.10008.1.2.4.70"),
            ("jpegls_u12.dcm", "jpegls_u12", "1.2.840.10008.1.2.4.80"),
            ("rle_u12.dcm", "rle_u12", "1.2.840.10008.1.2.5"),
            ("rle_s16.dcm", "rle_s16", "1.2.840.10008.1.2.5"),
            ("mono1_uncalibrated.dcm", "mono1_uncalibrated", "1.2.840.10008.1.2.1"),
            ("mono1_calibrated.dcm", "mono1_calibrated", "1.2.840.10008.1.2.1"),
            ("multiframe.dcm", "multiframe", "1.2.840.10008.1.2.1"),
        ]
        for (file, name, syntax) in cases {
            let d = try DicomFile.read(dir + file)
            let want = try expected.readFloats(name)
            XCTAssertEqual(d.transferSyntax, syntax, file)
            XCTAssertEqual([d.frames, d.rows, d.cols], want.shape, file)
            XCTAssertEqual(d.values, want.values, "\(file): HU differ")
        }
        XCTAssertTrue(try DicomFile.read(dir + "mono1_uncalibrated.dcm").inverted)
        XCTAssertFalse(try DicomFile.read(dir + "mono1_calibrated.dcm").inverted, "HU-calibrated MONOCHROME1 is not inverted")
        let s16 = try DicomFile.read(dir + "explicit_le_s16.dcm")
        XCTAssertEqual(Array(s16.values.prefix(4)), [-32768 - 1024, -1025, -1024, 32767 - 1024], "signed extremes")
        let header = try DicomFile.read(dir + "multiframe.dcm", pixels: false)
        XCTAssertTrue(header.values.isEmpty)
        XCTAssertEqual(header.frames, 3)
    }

    func testNIfTIVolumeSlicesToTheExpectedHU() throws {
        let v = try NiftiVolume.read(dir + "volume.nii.gz")
        let want = try HDF5File(dir + "expected.h5").readFloats("volume")
        XCTAssertEqual(v.dims, [8, 6, 4])
        XCTAssertEqual(v.sliceAxis, 2, "RAS: k runs inferior to superior")
        XCTAssertEqual(v.slope, 2); XCTAssertEqual(v.intercept, -1000)
        XCTAssertEqual((0..<v.sliceCount).flatMap { v.slice($0).values }, want.values)
        XCTAssertEqual(v.slice(0).width, 8); XCTAssertEqual(v.slice(0).height, 6)
    }

    func testBadFilesAreNamedWithTheirReason() {
        for (file, words) in [("jpeg2000.dcm", ["decoding failed (corrupt compressed pixel data: JPEG 2000"]), ("truncated.dcm", ["truncated.dcm"]),
                              ("not_dicom.dcm", ["not_dicom.dcm"])] {
            XCTAssertThrowsError(try DicomFile.read(dir + file), file) { e in
                for w in words { XCTAssertTrue("\(e)".contains(w), "\(file): '\(e)' should name \(w)") }
                XCTAssertTrue("\(e)".contains(file), "\(e)")
            }
        }
        XCTAssertThrowsError(try NiftiVolume.read(dir + "not_dicom.dcm"))
    }

    func testWindowIsTheDICOMLinearFunction() {
        let lung = WindowLevel(width: 1500, level: -600)
        // c - 0.5 - (w - 1) / 2 = -1350 and c - 0.5 + (w - 1) / 2 = 149: outside them 0 and 255.
        XCTAssertEqual(lung.apply([-3000, -1350, 150, 3000]), [0, 0, 255, 255])
        for x in stride(from: -1349.0, through: 149, by: 37.5) {
            let want = UInt8((((x + 600.5) / 1499 + 0.5) * 255).rounded())
            XCTAssertEqual(lung.apply([Float(x)]), [want], "x = \(x)")
        }
        XCTAssertEqual(Window(argument: "lung"), .lung)
        XCTAssertEqual(Window(argument: "400,40").map { try? $0.level(for: "f", own: nil) }, WindowLevel(width: 400, level: 40))
        XCTAssertEqual(Window(argument: "400,40")?.argument, "400,40")
        XCTAssertNil(Window(argument: "0,40"), "a window is at least 1 HU wide")
        XCTAssertNil(Window(argument: "wide"))
        XCTAssertThrowsError(try Window.file.level(for: "x.nii", own: nil)) { XCTAssertTrue("\($0)".contains("x.nii")) }
        XCTAssertEqual(MedicalSource.Slices(argument: "central:3")?.pick(10), [3, 4, 5])
        XCTAssertEqual(MedicalSource.Slices(argument: "every:4")?.pick(10), [0, 4, 8])
        XCTAssertNil(MedicalSource.Slices(argument: "every:0"))
    }

    func testSeriesAreGroupedAndOrderedByPositionNotFileName() throws {
        let series = try MedicalSource(dir: dir + "series").series()
        XCTAssertEqual(series.count, 2)
        let want = try HDF5File(dir + "expected.h5").readInt64s("series/order_values").values.map { Float($0) }
        let got = try series.flatMap { s in try s.slices.map { try DicomFile.read(dir + "series/" + $0.file).values[0] } }
        XCTAssertEqual(got, want, "slices in ImagePositionPatient order, series by UID")
        XCTAssertEqual(Set(series.map(\.group)), ["PAT1"])
    }

    /// synth --format dicom, prepare (labels.csv by PatientID, patient-level
    /// split), a short training, and predict on a series folder and a NIfTI volume.
    func testSyntheticStudyEndToEnd() throws {
        let root = makeTempDir("medical")
        let synth = try runCommand([disttrainBinary, "synth", "--format", "dicom", "--out", root + "/dcm", "--n", "80", "--size", "32",
                                    "--slices-per-patient", "10"])
        XCTAssertEqual(synth.status, 0, synth.output)
        let prep = try runCommand([disttrainBinary, "prepare", "--images", root + "/dcm", "--out", root + "/dcm.h5", "--val", "0.25",
                                   "--test", "0.25", "--slices", "every:2"])
        XCTAssertEqual(prep.status, 0, prep.output)
        let ds = try Dataset(path: root + "/dcm.h5")
        XCTAssertEqual(ds.count, 40)
        XCTAssertEqual(ds.classNames, ["NORMAL", "COVID"])
        XCTAssertEqual(try ds.file.stringAttribute("window"), "lung")
        let groups = try ds.groups()!
        var seen: [String: Split] = [:]
        for split in Split.allCases { for i in ds[split: split] {
            XCTAssertEqual(seen[groups[i]] ?? split, split, "patient \(groups[i]) crosses splits")
            seen[groups[i]] = split
        } }
        XCTAssertEqual(Set(seen.values), Set(Split.allCases))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/dcm-splits/test.csv"))
        var c = TrainConfig()
        c.data = root + "/dcm.h5"; c.run = root + "/run"; c.epochs = 1; c.batchSize = 8; c.imageSize = 32; c.width = 4; c.evalBatchSize = 8
        try startTraining(c, comm: SingleProcess(), debug: false)
        XCTAssertEqual(try TrainConfig.load(c.run + "/config.json").window, "lung", "the window travels with the run")
        let nifti = try runCommand([disttrainBinary, "synth", "--format", "nifti", "--out", root + "/nii", "--n", "40", "--size", "32"])
        XCTAssertEqual(nifti.status, 0, nifti.output)
        let p = try runCommand([disttrainBinary, "predict", root + "/dcm/P0001", root + "/nii/P0002.nii.gz", "--run", c.run,
                                "--out", root + "/pred", "--cams", "gradcam"])
        XCTAssertEqual(p.status, 0, p.output)
        let series = try String(contentsOfFile: root + "/pred/series.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(series.count, 3, "header, the DICOM series and the volume")
        XCTAssertTrue(series[1].contains(",10,") && series[2].contains("P0002.nii.gz,10,"), "\(series)")
        let rows = try String(contentsOfFile: root + "/pred/predictions.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.count, 21)
        let overlays = try FileManager.default.contentsOfDirectory(atPath: root + "/pred")
        XCTAssertTrue(overlays.contains("P0002-9-gradcam.png"), "a volume's slices are named by their index")
        XCTAssertEqual(overlays.filter { $0.hasPrefix("P0001_IM") && $0.hasSuffix("-gradcam.png") }.count, 10, "\(overlays)")
        // A file that only looks like DICOM (by its name) is refused, named.
        let bad = try runCommand([disttrainBinary, "predict", dir + "not_dicom.dcm", "--run", c.run, "--out", root + "/bad"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("not_dicom.dcm"), bad.output)
    }
}
