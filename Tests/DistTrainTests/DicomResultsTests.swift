@testable import DistTrain
import Foundation
import Net
import XCTest

/// `predict --dicom-out` (issue 29, item 1): a Comprehensive SR and a Secondary
/// Capture series per DICOM series, in the source study, read back through dcmsr
/// and dcmdata and compared with predictions.csv and the source files; and, where
/// Debian's tools are installed (launch/setup installs them), accepted by
/// DCMTK's dsrdump and dicom3tools' dciodvfy.
final class DicomResultsTests: XCTestCase {
    static let comprehensiveSR = "1.2.840.10008.5.1.4.1.1.88.33", secondaryCapture = "1.2.840.10008.5.1.4.1.1.7"
    let fixtures = packageRoot + "/Tests/Fixtures/"

    /// config.json and an untrained ResNet-18 of width 4 at 32 px (window lung): predict needs no
    /// training. Kaiming-initialised, its head seeded uniform in [-1, 1], so slices get different probabilities.
    func untrainedRun(classes: [String] = ["NORMAL", "COVID"]) throws -> String {
        let run = makeTempDir("dicom-results-run")
        var c = TrainConfig()
        c.run = run; c.imageSize = 32; c.width = 4; c.inChannels = 1; c.numClasses = 2; c.classNames = classes
        c.mean = [0.5]; c.std = [0.25]; c.window = "lung"
        try FileManager.default.createDirectory(atPath: run + "/ckpt", withIntermediateDirectories: true)
        let n = ResNet(c.netConfig)
        n.initialize(seed: 29)
        var rng = SplitMix(29)
        for name in ["fc.weight", "fc.bias"] {
            guard let e = n.store.entry(named: name) else { XCTFail("no \(name)"); continue }
            n.store.write(e, (0..<e.count).map { _ in Float(Int(rng.next() % 2001) - 1000) / 1000 })
        }
        try Checkpoint.save(run + "/ckpt/best.h5", net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store),
                            state: TrainState(), config: c)
        try c.save(to: run + "/config.json")
        return run
    }

    /// predictions.csv as (file, p) rows.
    func predictions(_ dir: String) throws -> [(file: String, p: Double)] {
        try CSV.read(dir + "/predictions.csv").dropFirst().map { ($0.fields[0], Double($0.fields[1]) ?? .nan) }
    }

    func tool(_ name: String) -> String? {
        ["/usr/bin/", "/usr/local/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// dsrdump reads the SR (exit 0); dciodvfy finds no error in any file (its warnings are printed, not
    /// failed, unless `clean`: a source with complete modules must give objects without any warning).
    func assertToolsAccept(sr: String, images: [String], clean: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        if let dsrdump = tool("dsrdump") {
            let r = try runCommand([dsrdump, "+U8", sr])  // UTF-8 out, whatever the document's character set
            XCTAssertEqual(r.status, 0, "dsrdump: \(r.output)", file: file, line: line)
            XCTAssertTrue(r.output.contains("Imaging Measurement Report"), r.output, file: file, line: line)
        } else {
            print("note: dsrdump not installed (Debian package dcmtk; launch/setup installs it): not checked")
        }
        guard let dciodvfy = tool("dciodvfy") else {
            print("note: dciodvfy not installed (Debian package dicom3tools; launch/setup installs it): not checked")
            return
        }
        for f in [sr] + images {
            let r = try runCommand([dciodvfy, f])
            let errors = r.output.split(separator: "\n").filter { $0.contains("Error") }
            XCTAssertEqual(errors, [], "dciodvfy \(f):\n\(r.output)", file: file, line: line)
            let warnings = r.output.split(separator: "\n").filter { $0.contains("Warning") }
            if clean { XCTAssertEqual(warnings, [], "dciodvfy \(f):\n\(r.output)", file: file, line: line) }
            if !warnings.isEmpty { print("dciodvfy \((f as NSString).lastPathComponent): \(warnings.count) warning(s): \(warnings.prefix(6))") }
        }
    }

    func testPredictWritesAnSRAndOneSecondaryCapturePerSliceInTheSourceStudy() throws {
        let root = makeTempDir("dicom-results")
        let synth = try runCommand([disttrainBinary, "synth", "--format", "dicom", "--out", root + "/dcm", "--n", "20", "--size", "32",
                                    "--slices-per-patient", "5"])
        XCTAssertEqual(synth.status, 0, synth.output)
        let run = try untrainedRun()
        let p = try runCommand([disttrainBinary, "predict", root + "/dcm/P0001", root + "/dcm/P0002", "--run", run, "--out", root + "/pred",
                                "--cams", "gradcam,eigencam", "--dicom-out", root + "/dicom"])
        XCTAssertEqual(p.status, 0, p.output)
        XCTAssertTrue(p.output.contains("2 SR document(s) and 10 Secondary Capture image(s)"), p.output)
        let rows = try predictions(root + "/pred")
        let seriesCSV = try CSV.read(root + "/pred/series.csv").dropFirst().map { Double($0.fields[2]) ?? .nan }
        XCTAssertEqual(rows.count, 10)
        let sha = try runCommand(["sha256sum", run + "/ckpt/best.h5"]).output.prefix(64)
        var seriesUIDs: Set<String> = []
        for (k, patient) in ["P0001", "P0002"].enumerated() {
            let dir = "\(root)/dicom/series-\(k + 1)"
            let mine = rows.filter { $0.file.hasPrefix("\(root)/dcm/\(patient)/") }
            XCTAssertEqual(mine.count, 5, patient)
            let sources = try mine.map { try DicomFile.read($0.file, pixels: false) }
            let sopClass = try DicomResults.value(mine[0].file, "SOPClassUID")
            XCTAssertEqual(sopClass, "1.2.840.10008.5.1.4.1.1.2", "synth writes CT images")
            let sr = try DicomResults.readSR(dir + "/sr.dcm")
            XCTAssertEqual(sr.sopClass, Self.comprehensiveSR)
            XCTAssertEqual(sr.study, sources[0].studyUID, "the SR is in the source study")
            XCTAssertFalse(sr.series.isEmpty)
            XCTAssertNotEqual(sr.series, sources[0].seriesUID, "a new series")
            XCTAssertEqual(try DicomResults.value(dir + "/sr.dcm", "PatientID"), patient)
            XCTAssertEqual(try DicomResults.value(dir + "/sr.dcm", "Modality"), "SR")
            // The series' probability: the mean of predictions.csv's (6 decimals: each within 5e-7, so their mean too).
            let numbers = sr.numbers
            XCTAssertGreaterThan(Set(mine.map(\.p)).count, 1, "the slices' probabilities differ, so order and values are tested")
            XCTAssertEqual(numbers.count, 6, "the series and its 5 slices")
            let mean = mine.map(\.p).reduce(0, +) / 5
            XCTAssertEqual(numbers[0].value, mean, accuracy: 1e-6)
            XCTAssertEqual(numbers[0].value, seriesCSV[k], accuracy: 1e-6, "series.csv's mean")
            XCTAssertNil(numbers[0].image, "the series value is the mean, not of one image")
            // Each slice's probability with the image it came from, in series order.
            for (j, (row, src)) in zip(mine, sources).enumerated() {
                XCTAssertEqual(numbers[j + 1].value, row.p, accuracy: 1e-6, row.file)
                XCTAssertEqual(numbers[j + 1].image, [sopClass, src.sopUID, "0"], row.file)
            }
            // The decision at p > 0.5, as SNOMED CT present / absent.
            let decision = sr.items.first { $0.kind == "code" && $0.concept == "840539006" }
            XCTAssertEqual(decision?.values, [mean > 0.5 ? "52101004" : "272519000"], "\(sr.items)")
            XCTAssertEqual(sr.items.first { $0.concept == "111003" }?.values, ["sha256:" + sha], "the checkpoint's fingerprint")
            XCTAssertTrue(sr.items.contains { $0.concept == "121071" && $0.values == ["840539006"] }, "the finding is COVID-19")
            let parameters = sr.items.first { $0.concept == "111002" }?.values.first ?? ""
            XCTAssertTrue(parameters.contains("decision p > 0.5;") && parameters.contains("window lung;"), parameters)
            // Evidence: every source instance, in its study and series.
            XCTAssertEqual(Set(sr.evidence.map { $0[3] }), Set(sources.map(\.sopUID)))
            XCTAssertEqual(sr.evidence.count, 5)
            XCTAssertTrue(sr.evidence.allSatisfy { $0[0] == sources[0].studyUID && $0[1] == sources[0].seriesUID && $0[2] == sopClass })
            // One Secondary Capture per slice, each naming its source, in a third series of the study.
            var scSeries: Set<String> = []
            for (j, src) in sources.enumerated() {
                let sc = String(format: "\(dir)/sc-%04d.dcm", j + 1)
                func v(_ tag: String) throws -> String { try DicomResults.value(sc, tag) }
                XCTAssertEqual(try v("SOPClassUID"), Self.secondaryCapture)
                XCTAssertEqual(try v("StudyInstanceUID"), sources[0].studyUID)
                XCTAssertEqual(try v("SourceImageSequence[0].ReferencedSOPInstanceUID"), src.sopUID)
                XCTAssertEqual(try v("SourceImageSequence[0].ReferencedSOPClassUID"), sopClass)
                XCTAssertEqual(try v("InstanceNumber"), "\(j + 1)")
                XCTAssertEqual(try v("PhotometricInterpretation"), "RGB")
                XCTAssertEqual([try v("Rows"), try v("Columns"), try v("SamplesPerPixel")], ["32", "32", "3"])
                XCTAssertEqual(try v("ConversionType"), "WSD")
                XCTAssertEqual(try v("BurnedInAnnotation"), "NO")
                XCTAssertEqual(try v("PatientOrientation"), "L\\P", "synth's rows run to the patient's left, columns posterior")
                XCTAssertTrue(try v("DerivationDescription").hasPrefix("gradcam"), "the first of --cams")
                // Its pixels are predict's gradcam overlay PNG of the same slice, byte for byte.
                let png = try RasterImage.read("\(root)/pred/\(patient)_\(((mine[j].file) as NSString).lastPathComponent.replacingOccurrences(of: ".dcm", with: ""))-gradcam.png")
                XCTAssertEqual(try DicomResults.pixels(sc), png.pixels, sc)
                scSeries.insert(try v("SeriesInstanceUID"))
            }
            XCTAssertEqual(scSeries.count, 1)
            XCTAssertFalse(scSeries.contains(sr.series) || scSeries.contains(sources[0].seriesUID))
            seriesUIDs.formUnion(scSeries); seriesUIDs.insert(sr.series)
            try assertToolsAccept(sr: dir + "/sr.dcm", images: [dir + "/sc-0001.dcm"])
        }
        XCTAssertEqual(seriesUIDs.count, 4, "each series' SR and SC series are new and distinct")
    }

    /// A source with full patient and study modules and a Latin-1 name: copied as they are.
    /// Multi-frame sources: each frame referred to by number where the SOP class has frames
    /// (a Multi-frame SC), the instance alone where it is a classic single-frame class (CT).
    func testPatientStudyModulesAndFramesAreCarriedOver() throws {
        let root = makeTempDir("dicom-results-rich")
        let run = try untrainedRun()
        let rich = fixtures + "dicom_results/rich.dcm", ctFrames = fixtures + "medical/multiframe.dcm"
        let scFrames = fixtures + "dicom_results/multiframe_sc.dcm"
        let p = try runCommand([disttrainBinary, "predict", rich, ctFrames, scFrames, "--run", run, "--out", root + "/pred", "--cams", "gradcam",
                                "--dicom-out", root + "/dicom", "--uid-root", "1.2.826.0.1.3680043.10"])
        XCTAssertEqual(p.status, 0, p.output)
        let sr1 = root + "/dicom/series-1/sr.dcm", sc1 = root + "/dicom/series-1/sc-0001.dcm"
        for f in [sr1, sc1] {
            for tag in ["SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyInstanceUID"] {
                XCTAssertEqual(try DicomResults.value(f, tag), try DicomResults.value(rich, tag), "\(f): \(tag)")
            }
            XCTAssertTrue(try DicomResults.value(f, "SOPInstanceUID").hasPrefix("1.2.826.0.1.3680043.10."), "--uid-root")
            XCTAssertTrue(try DicomResults.value(f, "SeriesInstanceUID").hasPrefix("1.2.826.0.1.3680043.10."), "--uid-root")
        }
        XCTAssertEqual(try DicomResults.value(sr1, "PatientName"), "M\u{FC}ller^J\u{FC}rgen", "Latin-1 bytes with their ISO_IR 100")
        XCTAssertEqual(try DicomResults.value(sc1, "PatientOrientation"), "L\\P")
        XCTAssertEqual(try DicomResults.value(sc1, "BodyPartExamined"), "CHEST")
        XCTAssertThrowsError(try DicomResults.value(sc1, "Laterality"), "an unpaired body part has no Laterality")
        for (k, file, frames) in [(2, ctFrames, ["0", "0", "0"]), (3, scFrames, ["1", "2", "3"])] {
            let dir = "\(root)/dicom/series-\(k)"
            let sr = try DicomResults.readSR(dir + "/sr.dcm")
            let uid = try DicomFile.read(file, pixels: false).sopUID
            XCTAssertEqual(sr.numbers.dropFirst().map { $0.image?[1] ?? "" }, [uid, uid, uid], file)
            XCTAssertEqual(sr.numbers.dropFirst().map { $0.image?[2] ?? "" }, frames, "\(file): frames are numbered from 1 where the class has frames")
            XCTAssertEqual(sr.items.filter { $0.concept == "112039" }.map { $0.values }.dropFirst(), [["slice 1 (frame 1)"], ["slice 2 (frame 2)"], ["slice 3 (frame 3)"]])
            XCTAssertEqual(sr.evidence.map { $0[3] }, [uid], "one instance, listed once")
            let third = { try DicomResults.value(dir + "/sc-0003.dcm", "SourceImageSequence[0].ReferencedFrameNumber") }
            if frames[2] == "3" { XCTAssertEqual(try third(), "3") } else { XCTAssertThrowsError(try third()) }
            XCTAssertEqual(try DicomResults.value(dir + "/sc-0003.dcm", "SourceImageSequence[0].ReferencedSOPInstanceUID"), uid)
        }
        try assertToolsAccept(sr: sr1, images: [sc1], clean: true)
        try assertToolsAccept(sr: root + "/dicom/series-3/sr.dcm", images: [root + "/dicom/series-3/sc-0002.dcm"])

        // --cams none: the SR alone. Bad roots and inputs without DICOM are refused, named.
        let none = try runCommand([disttrainBinary, "predict", rich, "--run", run, "--out", root + "/p2", "--cams", "none", "--dicom-out", root + "/d2"])
        XCTAssertEqual(none.status, 0, none.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/d2/series-1"), ["sr.dcm"])
        for bad in ["1.02.3", "1..2", "1.2.a", "1.2.3.4.5.6.7.8.9.10.11.12.13"] {
            let r = try runCommand([disttrainBinary, "predict", rich, "--run", run, "--out", root + "/p3", "--dicom-out", root + "/d3", "--uid-root", bad])
            XCTAssertEqual(r.status, 64, r.output)
            XCTAssertTrue(r.output.contains("--uid-root '\(bad)'"), r.output)
        }
        let png = root + "/x.png"
        try RasterImage(width: 8, height: 8, channels: 1, pixels: [UInt8](repeating: 9, count: 64)).writePNG(png)
        let r = try runCommand([disttrainBinary, "predict", png, "--run", run, "--out", root + "/p4", "--dicom-out", root + "/d4"])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("--dicom-out '\(root)/d4': none of the inputs is a DICOM file or series"), r.output)
    }

    /// A positive class that is not COVID-19, with a long odd name: a local code, and every value
    /// within its VR (LO at most 64 characters, no backslash), so the objects stay valid.
    func testAnotherPositiveClassGetsALocalCodeAndValidValues() throws {
        let root = makeTempDir("dicom-results-class")
        let name = "Ground-glass opacity \\ \u{FC}ber-long class name that runs well past sixty-four characters"
        let run = try untrainedRun(classes: ["clear", name])
        let rich = fixtures + "dicom_results/rich.dcm"
        let p = try runCommand([disttrainBinary, "predict", rich, "--run", run, "--out", root + "/pred", "--cams", "gradcam", "--dicom-out", root + "/dicom"])
        XCTAssertEqual(p.status, 0, p.output)
        let sr = root + "/dicom/series-1/sr.dcm", sc = root + "/dicom/series-1/sc-0001.dcm"
        let content = try DicomResults.readSR(sr)
        XCTAssertTrue(content.items.contains { $0.concept == "121071" && $0.values == ["GROUNDGLASSOPACI"] }, "\(content.items)")
        XCTAssertFalse(content.items.contains { $0.concept == "840539006" })
        XCTAssertEqual(try DicomResults.value(sr, "CodingSchemeIdentificationSequence[0].CodingSchemeDesignator"), "99DISTTRAIN")
        for f in [sr, sc] {
            let d = try DicomResults.value(f, "SeriesDescription")
            XCTAssertLessThanOrEqual(d.count, 64, d)
            XCTAssertTrue(d.hasPrefix("Ground-glass opacity  ber-long"), d)
        }
        try assertToolsAccept(sr: sr, images: [sc])
    }

    /// A source whose SOPInstanceUID is not a UID cannot be referred to: one line naming the file and the value.
    func testASourceThatCannotBeReferredToIsNamed() throws {
        let root = makeTempDir("dicom-results-bad")
        let run = try untrainedRun()
        try FileManager.default.createDirectory(atPath: root + "/s", withIntermediateDirectories: true)
        for (k, sop) in ["1.2.826.0.1.3680043.10.543.29.9.1", "1.2.x.4"].enumerated() {
            try DicomFile.writeCT("\(root)/s/\(k).dcm", hu: [Float](repeating: -500, count: 64), size: 8, patientID: "BAD-1",
                                  studyUID: "1.2.826.0.1.3680043.10.543.29.7", seriesUID: "1.2.826.0.1.3680043.10.543.29.8", sopUID: sop,
                                  instance: k + 1, z: Double(k), spacing: 1, window: WindowLevel(width: 1500, level: -600))
        }
        let r = try runCommand([disttrainBinary, "predict", root + "/s", "--run", run, "--out", root + "/pred", "--cams", "none",
                                "--dicom-out", root + "/dicom"])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("'\(root)/s/1.dcm': cannot refer to its instance") && r.output.contains("SOPInstanceUID '1.2.x.4'"), r.output)
        XCTAssertEqual(r.output.split(separator: "\n").filter { $0.hasPrefix("Error") }.count, 1, r.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/dicom/series-1/sr.dcm"), "no half result")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/dicom/series-1/sr.dcm.tmp"))
    }

    func testDeviceUIDAndFindingCodes() throws {
        // 2.25 + the UUID of the hash's first 128 bits with version 8 and variant 10: for a zero hash
        // 0x0000_0000_0000_8000_8000_0000_0000_0000 = 2^79 + 2^63.
        var d = try DicomResultDevice(config: { var c = TrainConfig(); c.classNames = ["NORMAL", "COVID"]; return c }(),
                                      checkpoint: fixtures + "dicom_results/rich.dcm", tta: .none, uidRoot: nil)
        XCTAssertEqual(d.checkpointSHA256.count, 64)
        XCTAssertEqual(d.checkpointSHA256, String(try runCommand(["sha256sum", fixtures + "dicom_results/rich.dcm"]).output.prefix(64)))
        d.checkpointSHA256 = String(repeating: "0", count: 64)
        XCTAssertEqual(d.deviceUID, "2.25.604472133179351442128896")  // 2^79 + 2^63
        // All ones but the fixed bits: UUID ffffffff-ffff-8fff-bfff-ffffffffffff (Python's uuid.UUID(...).int).
        d.checkpointSHA256 = String(repeating: "f", count: 64)
        XCTAssertEqual(d.deviceUID, "2.25.340282366920937934553716840013076889599")
        XCTAssertEqual(DicomCode.finding(forClass: "COVID"), .covid19)
        XCTAssertEqual(DicomCode.finding(forClass: "pneumonia (viral)\\x"), DicomCode("PNEUMONIAVIRALX", "99DISTTRAIN", "pneumonia (viral)x"))
    }
}
