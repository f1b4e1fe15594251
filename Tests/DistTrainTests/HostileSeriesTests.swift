@testable import DistTrain
import Foundation
import XCTest

/// Hostile prepare folders (issue 25): how series are listed, ordered and
/// labelled, how label CSVs are read and how the outputs are written. Each
/// class ends in exit 1 with one line naming the file, in bounded time, and
/// leaves no output that is wrong or half-written. Series are tiny (8x8
/// slices) and written here by DicomFile.writeCT.
final class HostileSeriesTests: XCTestCase {
    static let window = WindowLevel(width: 1500, level: -600)

    /// One CT series: a slice per z, in `dir`, named IM<i>.dcm; SOPInstanceUIDs `<series>.<i>`.
    func writeSeries(_ dir: String, patient: String, series: String, zs: [Double], size: Int = 8, hu: Float = -500) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, z) in zs.enumerated() {
            // A ramp across each row, so that images (and their statistics) are not flat.
            let pixels = (0..<(size * size)).map { hu + Float(i * 10) + Float($0 % size) * 60 }
            try DicomFile.writeCT("\(dir)/IM\(i).dcm", hu: pixels, size: size,
                                  patientID: patient, studyUID: series + ".0", seriesUID: series, sopUID: "\(series).\(i + 1)",
                                  instance: i + 1, z: z, spacing: 0.7, window: HostileSeriesTests.window)
        }
    }

    /// Two patients per class in class folders (COVID/, NORMAL/), 3 slices each.
    func writeStudy(_ dir: String) throws {
        for (k, cls) in ["NORMAL", "COVID"].enumerated() {
            for p in 0..<2 {
                let id = "P\(k)\(p)"
                try writeSeries("\(dir)/\(cls)/\(id)", patient: id, series: "2.25.9.\(k).\(p)", zs: [0, 5, 10])
            }
        }
    }

    func prepare(_ args: String...) throws -> CommandResult {
        // A bound on the time: a regression that blocks (a FIFO opened) fails here instead of hanging the suite.
        try runCommand([disttrainBinary, "prepare"] + args, timeout: 60)
    }

    /// Exit 1 with one line that holds every `words`.
    func assertRefused(_ r: CommandResult, _ words: String..., file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, r.output, file: file, line: line)
        let lines = r.output.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one line: \(r.output)", file: file, line: line)
        for w in words { XCTAssertTrue(r.output.contains(w), "'\(w)' not in: \(r.output)", file: file, line: line) }
    }

    // MARK: 1. a FIFO (or socket, device) in a prepare folder

    func testAFIFOInAPrepareFolderIsRefusedByNameNotOpened() throws {
        let dir = makeTempDir("fifo")
        try writeStudy(dir)
        // Without an extension (the sniffer would open it) and as .dcm (DCMTK would).
        for name in ["COVID/P10/IM9", "COVID/P10/IM9.dcm", "labels.csv"] {
            let fifo = dir + "/" + name
            XCTAssertEqual(mkfifo(fifo, 0o644), 0, "mkfifo \(fifo)")
            let r = try prepare("--images", dir, "--out", dir + "/x.h5")
            XCTAssertLessThan(r.seconds, 50, "blocked on the FIFO")
            assertRefused(r, "'\(fifo)': not a regular file (a FIFO)")
            unlink(fifo)
        }
        // In a hidden folder it is left out, with everything there, and so never opened.
        try FileManager.default.createDirectory(atPath: dir + "/.cache", withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(dir + "/.cache/IM9.dcm", 0o644), 0)
        let hidden = try prepare("--images", dir, "--out", dir + "/hidden.h5", "--val", "0", "--test", "0")
        XCTAssertEqual(hidden.status, 0, hidden.output)
        // A labels file given elsewhere, and an image of a CSV set.
        let labels = dir + "/../fifo-labels-\(getpid()).csv"
        XCTAssertEqual(mkfifo(labels, 0o644), 0)
        defer { unlink(labels) }
        assertRefused(try prepare("--images", dir, "--out", dir + "/x.h5", "--labels", labels), "not a regular file (a FIFO)", "fifo-labels")
        let csv = try writeSyntheticCSVSet(makeTempDir("fifo-csv"), train: 4, val: 0, test: 0, size: 8)
        XCTAssertEqual(mkfifo(csv + "/NORMAL/hang.png", 0o644), 0)
        let rows = "filename,label\nNORMAL/img (0).png,0\nNORMAL/hang.png,0\nCOVID/img (1).png,1\n"
        try rows.write(toFile: csv + "/train.csv", atomically: true, encoding: .utf8)
        assertRefused(try prepare("--images", csv, "--out", csv + "/x.h5"),
                      "train.csv line 3: '\(csv)/NORMAL/hang.png': not a regular file (a FIFO)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.h5"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x-splits"))
    }

    // MARK: 2. a NaN ImagePositionPatient

    func testANonFinitePositionIsRefusedNotSortedAnywhere() throws {
        let dir = makeTempDir("nan")
        try writeStudy(dir)
        let ok = try prepare("--images", dir, "--out", dir + "/ok.h5", "--val", "0", "--test", "0", "--slices", "central:1")
        XCTAssertEqual(ok.status, 0, ok.output)
        // central:1 is the middle slice of each series (IM1, z = 5).
        XCTAssertTrue(try Dataset(path: dir + "/ok.h5").filenames().allSatisfy { $0.hasSuffix("/IM1.dcm") })
        for bad in [Double.nan, .infinity] {
            try writeSeries(dir + "/COVID/P11", patient: "P11", series: "2.25.9.1.1", zs: [0, bad, 10, 15, 20])
            let r = try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0", "--slices", "central:1")
            assertRefused(r, "'\(dir)/COVID/P11/IM1.dcm': ImagePositionPatient", "is not finite; its series cannot be ordered")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.h5"))
    }

    // MARK: 3. a series split across class folders

    func testASeriesSplitAcrossClassFoldersIsRefused() throws {
        let dir = makeTempDir("split-series")
        try writeStudy(dir)
        // One more slice of NORMAL/P00's series, under COVID/: it would take the label of the series' first file.
        try FileManager.default.createDirectory(atPath: dir + "/COVID/P00", withIntermediateDirectories: true)
        try DicomFile.writeCT(dir + "/COVID/P00/IM3.dcm", hu: [Float](repeating: 0, count: 64), size: 8, patientID: "P00",
                              studyUID: "2.25.9.0.0.0", seriesUID: "2.25.9.0.0", sopUID: "2.25.9.0.0.4", instance: 4, z: 15,
                              spacing: 0.7, window: HostileSeriesTests.window)
        assertRefused(try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0"),
                      "series 2.25.9.0.0 has files in class folders 'COVID' ('\(dir)/COVID/P00/IM3.dcm') and "
                        + "'NORMAL' ('\(dir)/NORMAL/P00/IM0.dcm')")
    }

    // MARK: 4. labels CSVs read as RFC 4180

    func testQuotedCommasInLabelCSVsAreOneField() throws {
        let dir = makeTempDir("quoted")
        try writeSeries(dir + "/a", patient: "ward 1, bed 2", series: "2.25.8.1", zs: [0, 5])
        try writeSeries(dir + "/b", patient: "P2", series: "2.25.8.2", zs: [0, 5])
        try "PatientID,label,class\n\"ward 1, bed 2\",1,\"COVID, confirmed\"\nP2,0,NORMAL\n"
            .write(toFile: dir + "/labels.csv", atomically: true, encoding: .utf8)
        let r = try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0")
        XCTAssertEqual(r.status, 0, r.output)
        let ds = try Dataset(path: dir + "/x.h5")
        let names = try ds.filenames()
        XCTAssertEqual(ds.classNames, ["NORMAL", "COVID, confirmed"])
        for (i, f) in names.enumerated() { XCTAssertEqual(ds.labels[i], f.hasPrefix("a/") ? 1 : 0, f) }
        XCTAssertEqual(try ds.groups().map(Set.init), ["ward 1, bed 2", "P2"])

        // filename,label[,group] splits: quoted fields with commas, quotes and newlines; unquoted
        // commas in a file name still work without a group column (the label is after the last).
        let csv = makeTempDir("quoted-csv") + "/train.csv"
        try "filename,label,group\n\"N/a,b.png\",0,\"p, 1\"\n\"N/say \"\"hi\"\".png\",1,p2\n\"N/two\nlines.png\",1,p3\n"
            .write(toFile: csv, atomically: true, encoding: .utf8)
        let grouped = try DatasetSource.parseCSV(csv)
        XCTAssertEqual(grouped.map(\.file), ["N/a,b.png", "N/say \"hi\".png", "N/two\nlines.png"])
        XCTAssertEqual(grouped.map(\.group), ["p, 1", "p2", "p3"])
        XCTAssertEqual(grouped.map(\.line), [2, 3, 4])
        try "filename,label\nN/x, y.png,1\n\"N/q,z.png\",0\n".write(toFile: csv, atomically: true, encoding: .utf8)
        XCTAssertEqual(try DatasetSource.parseCSV(csv).map(\.file), ["N/x, y.png", "N/q,z.png"])
        XCTAssertEqual(try DatasetSource.parseCSV(csv).map(\.label), [1, 0])
        try "filename,label,group\nN/a,b.png,0,p1\n".write(toFile: csv, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DatasetSource.parseCSV(csv)) {
            XCTAssertTrue("\($0)".contains("train.csv line 2: expected 'filename,label,group'"), "\($0)")
        }
    }

    /// The review split CSVs are RFC 4180 too: a file name with a comma, quote or newline is one field.
    func testReviewSplitCSVsAreQuoted() throws {
        let dir = try writeSyntheticCSVSet(makeTempDir("inject"), train: 8, val: 0, test: 0, size: 8)
        let evil = ["NORMAL/a,1,forged.png", "COVID/say \"hi\".png", "NORMAL/x\nforged,1,g.png"]
        var rows = CSV.row(["filename", "label", "group"])
        for (i, name) in evil.enumerated() {
            try FileManager.default.copyItem(atPath: dir + "/\(i == 1 ? "COVID/img (1)" : "NORMAL/img (0)").png", toPath: dir + "/" + name)
            rows += CSV.row([name, i == 1 ? "1" : "0", "g\(i)"])
        }
        for i in 0..<8 { rows += CSV.row([i % 2 == 1 ? "COVID/img (\(i)).png" : "NORMAL/img (\(i)).png", "\(i % 2)", "p\(i)"]) }
        try rows.write(toFile: dir + "/train.csv", atomically: true, encoding: .utf8)
        let r = try prepare("--images", dir, "--out", dir + "/x.h5", "--split-by", "group", "--val", "0", "--test", "0.2")
        XCTAssertEqual(r.status, 0, r.output)
        var back: [String] = []
        for split in ["train", "val", "test"] {
            let records = try CSV.read(dir + "/x-splits/\(split).csv")
            XCTAssertEqual(records.first?.fields, ["filename", "label", "group"])
            XCTAssertTrue(records.allSatisfy { $0.fields.count == 3 }, "\(records.map(\.fields))")
            back += records.dropFirst().map { $0.fields[0] }
        }
        XCTAssertEqual(back.count, 11)
        XCTAssertTrue(Set(evil).isSubset(of: Set(back)), "\(back)")
    }

    // MARK: 5. only an exact key labels a series

    func testAnUnlistedKeyDoesNotFallBackToItsLastPathComponent() throws {
        let dir = makeTempDir("ward")
        try writeSeries(dir + "/a", patient: "ward9/P0001", series: "2.25.7.1", zs: [0, 5])
        try writeSeries(dir + "/b", patient: "P2", series: "2.25.7.2", zs: [0, 5])
        try "PatientID,label\nP0001,1\nP2,0\n".write(toFile: dir + "/labels.csv", atomically: true, encoding: .utf8)
        assertRefused(try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0"),
                      "labels.csv: no label for patient 'ward9/P0001'")

        // NIfTI volumes may be keyed by their file name (README), when no other volume has that name.
        let nii = makeTempDir("ward-nii")
        for v in ["ward1/P0001.nii.gz", "ward9/P0002.nii.gz"] {
            try FileManager.default.createDirectory(atPath: nii + "/" + (v as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try NiftiVolume.write(nii + "/" + v, hu: (0..<128).map { Float($0 * 10 - 1000) }, nx: 8, ny: 8, nz: 2, spacing: 0.7)
        }
        try "volume,label\nP0001.nii.gz,1\nward9/P0002.nii.gz,0\n".write(toFile: nii + "/labels.csv", atomically: true, encoding: .utf8)
        let ok = try prepare("--images", nii, "--out", nii + "/x.h5", "--val", "0", "--test", "0")
        XCTAssertEqual(ok.status, 0, ok.output)
        XCTAssertEqual(try Dataset(path: nii + "/x.h5").labels.sorted(), [0, 0, 1, 1])
        // A second P0001.nii.gz: the bare name would label both.
        try FileManager.default.createDirectory(atPath: nii + "/ward9", withIntermediateDirectories: true)
        try NiftiVolume.write(nii + "/ward9/P0001.nii.gz", hu: [Float](repeating: -500, count: 8 * 8 * 2), nx: 8, ny: 8, nz: 2, spacing: 0.7)
        assertRefused(try prepare("--images", nii, "--out", nii + "/y.h5", "--val", "0", "--test", "0"),
                      "labels.csv: 'P0001.nii.gz' names 2 volumes ('ward1/P0001.nii.gz', 'ward9/P0001.nii.gz'); key them by their path")
    }

    // MARK: 6. duplicate SOPInstanceUIDs

    func testDuplicateInstancesAreCountedOnceOrRefused() throws {
        let dir = makeTempDir("dup")
        try writeStudy(dir)
        // A byte-identical copy: left out, with a note; the slice counts once.
        try FileManager.default.copyItem(atPath: dir + "/COVID/P10/IM1.dcm", toPath: dir + "/COVID/P10/IM1 (copy).dcm")
        let r = try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("note: '\(dir)/COVID/P10/IM1.dcm' is a byte-identical copy of '\(dir)/COVID/P10/IM1 (copy).dcm'"),
                      r.output)
        let ds = try Dataset(path: dir + "/x.h5")
        XCTAssertEqual(ds.count, 12)
        XCTAssertEqual(try ds.filenames().filter { $0.hasPrefix("COVID/P10/IM1") }.count, 1)
        // Another file claiming that instance: which one is right cannot be told.
        try FileManager.default.removeItem(atPath: dir + "/COVID/P10/IM1 (copy).dcm")
        try DicomFile.writeCT(dir + "/COVID/P10/IM7.dcm", hu: [Float](repeating: 100, count: 64), size: 8, patientID: "P10",
                              studyUID: "2.25.9.1.0.0", seriesUID: "2.25.9.1.0", sopUID: "2.25.9.1.0.2", instance: 7, z: 30,
                              spacing: 0.7, window: HostileSeriesTests.window)
        assertRefused(try prepare("--images", dir, "--out", dir + "/y.h5", "--val", "0", "--test", "0"),
                      "'\(dir)/COVID/P10/IM7.dcm': SOPInstanceUID 2.25.9.1.0.2 is also that of '\(dir)/COVID/P10/IM1.dcm', a different file")
    }

    // MARK: 7. one class, two names

    func testConflictingClassNamesAreRefusedNamingBothLines() throws {
        let dir = makeTempDir("names")
        for p in 0..<3 { try writeSeries(dir + "/P\(p)", patient: "P\(p)", series: "2.25.6.\(p)", zs: [0, 5]) }
        try "PatientID,label,class\nP0,1,covid\nP1,0,normal\nP2,1,COVID\n".write(toFile: dir + "/labels.csv", atomically: true, encoding: .utf8)
        assertRefused(try prepare("--images", dir, "--out", dir + "/x.h5", "--val", "0", "--test", "0"),
                      "labels.csv lines 2 and 4: label 1 is named 'covid' and 'COVID'")
    }

    // MARK: 8. a failing prepare leaves the previous outputs as they were

    func testAFailingPrepareLeavesTheDataSetAndItsSplitsUntouched() throws {
        let dir = makeTempDir("keep")
        try writeStudy(dir)
        let out = dir + "/out/data.h5"
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: true)
        let ok = try prepare("--images", dir, "--out", out, "--val", "0", "--test", "0")
        XCTAssertEqual(ok.status, 0, ok.output)
        func snapshot() throws -> [String: Data] {
            var files: [String: Data] = [:]
            for name in try FileManager.default.subpathsOfDirectory(atPath: dir + "/out") {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: dir + "/out/" + name, isDirectory: &isDir), !isDir.boolValue {
                    files[name] = try Data(contentsOf: URL(fileURLWithPath: dir + "/out/" + name))
                }
            }
            return files
        }
        let before = try snapshot()
        XCTAssertEqual(Set(before.keys), ["data.h5", "data-splits/train.csv", "data-splits/val.csv", "data-splits/test.csv"])
        // A new slice of another size: listed and split, then refused while the images are decoded.
        try DicomFile.writeCT(dir + "/COVID/P11/IM3.dcm", hu: [Float](repeating: 0, count: 256), size: 16, patientID: "P11",
                              studyUID: "2.25.9.1.1.0", seriesUID: "2.25.9.1.1", sopUID: "2.25.9.1.1.4", instance: 4, z: 15,
                              spacing: 0.7, window: HostileSeriesTests.window)
        assertRefused(try prepare("--images", dir, "--out", out, "--val", "0", "--test", "0"), "COVID/P11/IM3.dcm", "is 16x16")
        XCTAssertEqual(try snapshot(), before, "the data set and its splits as they were, no temporaries left")
        // And a successful one replaces both.
        let again = try prepare("--images", dir, "--out", out, "--val", "0", "--test", "0", "--image-size", "8")
        XCTAssertEqual(again.status, 0, again.output)
        let after = try snapshot()
        XCTAssertEqual(Set(after.keys), Set(before.keys))
        XCTAssertTrue(String(decoding: after["data-splits/train.csv"] ?? Data(), as: UTF8.self).contains("COVID/P11/IM3.dcm"))
    }
}
