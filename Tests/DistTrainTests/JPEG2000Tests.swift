@testable import DistTrain
import Foundation
import XCTest

/// JPEG 2000 DICOM input (1.2.840.10008.1.2.4.90, .91 and HTJ2K .201, .202, .203) through
/// OpenJPEG, against the fixtures of Tests/Fixtures/j2k/make_j2k.py: pydicom 3 encoded them
/// with pylibjpeg-openjpeg (OpenJPH's ojph_compress the HTJ2K ones, opj_compress the JP2
/// one) and saved its own decode (pixel_array * slope + intercept) beside each, as float32
/// `.hu.f32`.
final class JPEG2000Tests: XCTestCase {
    let dir = packageRoot + "/Tests/Fixtures/j2k/"

    /// pydicom's HU of `name`.dcm: frames x rows x cols float32, little endian.
    func pydicomHU(_ name: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + name + ".hu.f32"))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    func testLosslessFramesDecodeToPydicomsHUExactly() throws {
        // file, expected, transfer syntax, [frames, rows, cols]
        let cases: [(String, String, String, [Int])] = [
            ("lossless_s16", "lossless_s16", "1.2.840.10008.1.2.4.90", [1, 64, 64]),
            ("lossless_u12_3frames", "lossless_u12_3frames", "1.2.840.10008.1.2.4.90", [3, 64, 64]),
            // The same frames in two fragments each, found through the Basic Offset Table.
            ("lossless_u12_3frames_fragmented", "lossless_u12_3frames", "1.2.840.10008.1.2.4.90", [3, 64, 64]),
            // ... and without the table: each frame's first fragment is the one that starts with SOC, SIZ.
            ("lossless_u12_3frames_fragmented_nobot", "lossless_u12_3frames", "1.2.840.10008.1.2.4.90", [3, 64, 64]),
            // 8-bit storage, no rescale.
            ("lossless_u8", "lossless_u8", "1.2.840.10008.1.2.4.90", [1, 64, 64]),
            // A JP2 file (OpenJPEG's opj_compress) in place of a bare codestream, 48 x 32: rows and columns told apart.
            ("lossless_jp2", "lossless_jp2", "1.2.840.10008.1.2.4.90", [1, 32, 48]),
            // HTJ2K (Part 15 block coder), unsigned 12 bit: DCMTK 3.6.7 does not know these UIDs (see medical.cpp).
            ("htj2k_lossless_u12", "htj2k_lossless_u12", "1.2.840.10008.1.2.4.201", [1, 64, 64]),
            ("htj2k_rpcl_u12", "htj2k_rpcl_u12", "1.2.840.10008.1.2.4.202", [1, 64, 64]),
        ]
        for (file, name, syntax, shape) in cases {
            let d = try DicomFile.read(dir + file + ".dcm")
            let want = try pydicomHU(name)
            XCTAssertEqual(d.transferSyntax, syntax, file)
            XCTAssertEqual([d.frames, d.rows, d.cols], shape, file)
            XCTAssertEqual(want.count, shape.reduce(1, *), file)
            XCTAssertEqual(d.values, want, "\(file): HU differ from pydicom's")
        }
        // Known answers beside pydicom's: the signed 16-bit extremes survive the round trip (intercept -1024).
        XCTAssertEqual(Array(try DicomFile.read(dir + "lossless_s16.dcm").values.prefix(4)), [-32768 - 1024, -1025, -1024, 32767 - 1024])
        // Multi-frame: every frame decoded, and they differ (the lungs move between frames).
        let multi = try DicomFile.read(dir + "lossless_u12_3frames.dcm")
        let want = try pydicomHU("lossless_u12_3frames")
        for k in 0..<3 {
            XCTAssertEqual(multi.frame(k), Array(want[(k * 4096)..<((k + 1) * 4096)]), "frame \(k)")
            if k > 0 { XCTAssertNotEqual(multi.frame(k), multi.frame(k - 1), "frame \(k) is not a copy of frame \(k - 1)") }
        }
        XCTAssertEqual(multi.slope, 1); XCTAssertEqual(multi.intercept, -1024)
        let header = try DicomFile.read(dir + "lossless_u12_3frames.dcm", pixels: false)
        XCTAssertEqual(header.frames, 3); XCTAssertTrue(header.values.isEmpty)
    }

    /// Lossy (9/7 irreversible wavelet): pydicom decodes with pylibjpeg-openjpeg 2.6's own
    /// build of OpenJPEG (2.5.2), we with Debian's libopenjp2 2.5.0. Dequantisation, the inverse
    /// 9/7 transform (and HTJ2K's block decoder) are the same code in both, each sample rounded
    /// to an integer and clamped to the precision, so the HU agree exactly (measured: no sample differs, in
    /// 16384 + 8192 + 8192 samples). No tolerance is derived because none is needed; a change
    /// of that code in either would show here as differences of a stored value or more.
    func testLossyFramesDecodeToPydicomsHU() throws {
        for (file, syntax, shape) in [("lossy_s16", "1.2.840.10008.1.2.4.91", [1, 128, 128]),
                                      ("lossy_s16_2frames", "1.2.840.10008.1.2.4.91", [2, 64, 64]),
                                      ("htj2k_lossy_u12_2frames", "1.2.840.10008.1.2.4.203", [2, 64, 64])] {
            let d = try DicomFile.read(dir + file + ".dcm")
            let want = try pydicomHU(file)
            XCTAssertEqual(d.transferSyntax, syntax, file)
            XCTAssertEqual([d.frames, d.rows, d.cols], shape, file)
            XCTAssertEqual(d.values.count, want.count, file)
            let worst = zip(d.values, want).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertEqual(worst, 0, "\(file): largest difference from pydicom's decode \(worst) HU")
            XCTAssertGreaterThan(Set(d.values).count, 100, "\(file): an image, not a flat frame")
        }
    }

    func testDamagedOrInconsistentCodestreamsAreRefusedInOneLineNamingTheFile() throws {
        let cases: [(String, [String])] = [
            ("truncated.dcm", ["decoding failed (corrupt compressed pixel data: JPEG 2000:"]),
            ("corrupt.dcm", ["decoding failed (corrupt compressed pixel data: JPEG 2000:"]),
            ("not_j2k.dcm", ["not a JPEG 2000 codestream or JP2 file; it starts 00 01 00 01"]),
            ("wrong_rows.dcm", ["the JPEG 2000 codestream is 32x32 pixels, the data set says 32x16 (Columns x Rows)"]),
            ("unsigned.dcm", ["the JPEG 2000 codestream is signed, PixelRepresentation 0 (unsigned)"]),
            ("over_bits_stored.dcm", ["decoded JPEG 2000 sample 40000 (pixel 0) is outside BitsStored 12 (0...4095"]),
            ("rgb.dcm", ["the JPEG 2000 codestream has 3 components, the data set 1 (SamplesPerPixel)"]),
            ("offset_table.dcm", ["the Basic Offset Table's entry for frame 2", "is not where a fragment starts"]),
        ]
        for (file, words) in cases {
            let path = dir + "bad/" + file
            XCTAssertThrowsError(try DicomFile.read(path), file) { e in
                let text = "\(e)"
                XCTAssertTrue(text.contains("'\(path)'"), "names the file: \(text)")
                for w in words { XCTAssertTrue(text.contains(w), "\(file): '\(w)' not in: \(text)") }
                XCTAssertFalse(text.contains("\n"), "one line: \(text)")
                XCTAssertFalse(text.contains("cannot be decoded here"), text)
            }
            XCTAssertEqual(try DicomFile.read(path, pixels: false).cols, file == "offset_table.dcm" ? 64 : 32, "\(file): its header still reads")
        }
        // A syntax newer than DCMTK 3.6.7 that is not HTJ2K (JPEG XL, 1.2.840.10008.1.2.4.110) is refused by its UID.
        let tmp = makeTempDir("j2k-unknown")
        try Data(HostileMedicalTests.dicom(fragments: [[0xFF, 0x0A] + [UInt8](repeating: 0, count: 30)], syntax: "1.2.840.10008.1.2.4.110"))
            .write(to: URL(fileURLWithPath: tmp + "/jxl.dcm"))
        assertError(try DicomFile.read(tmp + "/jxl.dcm"), contains: tmp + "/jxl.dcm", "transfer syntax 1.2.840.10008.1.2.4.110 (unknown to DCMTK",
                    "cannot be decoded here")
        XCTAssertEqual(try DicomFile.read(tmp + "/jxl.dcm", pixels: false).transferSyntax, "1.2.840.10008.1.2.4.110")
        // An unknown UID over native pixel data still reads as DCMTK parses it (as before HTJ2K was looked for).
        var native = [UInt8](try Data(contentsOf: URL(fileURLWithPath: packageRoot + "/Tests/Fixtures/medical/explicit_le_s16.dcm")))
        let uid = Array("1.2.840.10008.1.2.1\0".utf8)
        let at = try XCTUnwrap((0..<400).first { native[$0..<($0 + uid.count)].elementsEqual(uid) })
        native.replaceSubrange(at..<(at + uid.count), with: Array("1.2.840.10008.1.2.99".utf8))
        try Data(native).write(to: URL(fileURLWithPath: tmp + "/native.dcm"))
        let unknown = try DicomFile.read(tmp + "/native.dcm")
        XCTAssertEqual(unknown.transferSyntax, "1.2.840.10008.1.2.99")
        XCTAssertEqual(unknown.values, try DicomFile.read(packageRoot + "/Tests/Fixtures/medical/explicit_le_s16.dcm").values)
    }

    /// The same 8-patient study as J2K lossless and as explicit VR little endian:
    /// prepare makes the same data set of both, and a run trained on the J2K one
    /// predicts a J2K series as it predicts its uncompressed twin.
    func testJ2KStudyPreparesAndPredictsAsItsUncompressedTwin() throws {
        let root = makeTempDir("j2k-study")
        var sets: [Dataset] = []
        for kind in ["j2k", "native"] {
            let prep = try runCommand([disttrainBinary, "prepare", "--images", dir + "study/" + kind, "--out", "\(root)/\(kind).h5",
                                       "--val", "0.25", "--test", "0.25"])
            XCTAssertEqual(prep.status, 0, prep.output)
            sets.append(try Dataset(path: "\(root)/\(kind).h5"))
        }
        let (j2k, native) = (sets[0], sets[1])
        XCTAssertEqual(j2k.count, 16)
        XCTAssertEqual(j2k.count, native.count)
        XCTAssertEqual(try j2k.readImages(Array(0..<j2k.count)), try native.readImages(Array(0..<native.count)), "the same pixels")
        XCTAssertEqual(try j2k.groups(), try native.groups())
        XCTAssertEqual(j2k.labels, native.labels)
        var c = TrainConfig()
        c.data = root + "/j2k.h5"; c.run = root + "/run"; c.epochs = 1; c.batchSize = 4; c.imageSize = 32; c.width = 4; c.evalBatchSize = 4
        try startTraining(c, comm: SingleProcess(), debug: false)
        var rows: [[String]] = []
        for kind in ["j2k", "native"] {
            let p = try runCommand([disttrainBinary, "predict", dir + "study/\(kind)/JP02", "--run", c.run, "--out", "\(root)/pred-\(kind)"])
            XCTAssertEqual(p.status, 0, p.output)
            let series = try String(contentsOfFile: "\(root)/pred-\(kind)/series.csv", encoding: .utf8).split(separator: "\n")
            XCTAssertEqual(series.count, 2, "header and the one series: \(series)")
            rows.append(series.dropFirst().first.map { $0.split(separator: ",").dropFirst().map(String.init) } ?? [])
        }
        XCTAssertEqual(rows[0].first, "2", "two slices: \(rows[0])")
        XCTAssertEqual(rows[0], rows[1], "the J2K series predicts as its uncompressed twin")
        // A damaged J2K file through predict: exit nonzero, the file and the reason named.
        let bad = try runCommand([disttrainBinary, "predict", dir + "bad/truncated.dcm", "--run", c.run, "--out", root + "/pred-bad"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("bad/truncated.dcm") && bad.output.contains("JPEG 2000"), bad.output)
    }
}
