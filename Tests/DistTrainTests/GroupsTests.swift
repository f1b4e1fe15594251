@testable import DistTrain
import Foundation
import XCTest

/// Inferred patient groups (`disttrain groups`) against known patients, and
/// patient-level k-fold splits (`prepare --split-by group --folds K --fold I`).
final class GroupsTests: XCTestCase {
    func testAdjustedRandIndexKnownValues() {
        // scikit-learn's documented example: adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714...
        XCTAssertEqual(PatientGroups.adjustedRandIndex(["0", "0", "1", "1"], ["0", "0", "1", "2"]), 4.0 / 7.0, accuracy: 1e-12)
        XCTAssertEqual(PatientGroups.adjustedRandIndex(["a", "a", "b", "b"], ["x", "x", "y", "y"]), 1)  // names do not matter
        // Crossed halves: fewer shared pairs than chance, so below 0 (-1/6 by the formula).
        XCTAssertEqual(PatientGroups.adjustedRandIndex(["0", "0", "0", "0", "1", "1", "1", "1"], ["0", "1", "0", "1", "0", "1", "0", "1"]),
                       -1.0 / 6.0, accuracy: 1e-12)
    }

    func testFileNumber() {
        XCTAssertEqual(PatientGroups.fileNumber("COVID/Covid (17).png"), 17)
        XCTAssertEqual(PatientGroups.fileNumber("dir9/a12b3.png"), 3)
        XCTAssertNil(PatientGroups.fileNumber("NORMAL/none.png"))
        // Number order, not text order: 2 before 10; names without a number last.
        let names = ["x (10).png", "x.png", "x (2).png", "x (1).png"]
        XCTAssertEqual(PatientGroups.walk([0, 1, 2, 3], names: names, order: .number), [3, 2, 0, 1])
        XCTAssertEqual(PatientGroups.walk([0, 1, 2, 3], names: names, order: .stored), [0, 1, 2, 3])
    }

    /// A synthetic DICOM study (real PatientIDs, one anatomy per patient), its IDs withheld from the inference:
    /// the inferred groups must be the patients, over a range of jumps, not at one tuned value.
    func testInferredGroupsRecoverSyntheticPatients() throws {
        let root = makeTempDir("groups")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let synth = try runCommand([disttrainBinary, "synth", "--format", "dicom", "--out", root + "/dcm", "--n", "240", "--size", "48",
                                    "--slices-per-patient", "12"])
        XCTAssertEqual(synth.status, 0, synth.output)
        let prep = try runCommand([disttrainBinary, "prepare", "--images", root + "/dcm", "--out", root + "/dcm.h5"])
        XCTAssertEqual(prep.status, 0, prep.output)
        let ds = try Dataset(path: root + "/dcm.h5")
        let truth = try XCTUnwrap(ds.groups())
        XCTAssertEqual(Set(truth).count, 20)
        for jump in [2, PatientGroups.defaultJump, 5] {
            let r = try PatientGroups.infer(ds, jump: jump, order: .stored)
            XCTAssertEqual(r.count, 20, "jump \(jump)")
            XCTAssertEqual(PatientGroups.adjustedRandIndex(r.groups, truth), 1, accuracy: 1e-12, "jump \(jump)")
        }
        // The check can fail: a cut above every NCC makes each slice a group; an absolute cut of 0.5, which suits
        // the CT set, merges these patients (their slices all look alike at 32 px).
        XCTAssertLessThan(PatientGroups.adjustedRandIndex(try PatientGroups.infer(ds, cut: 1.0, order: .stored).groups, truth), 0.2)
        XCTAssertLessThan(PatientGroups.adjustedRandIndex(try PatientGroups.infer(ds, cut: 0.5, order: .stored).groups, truth), 0.5)

        // The command: the CSV prepare takes, and the agreement printed.
        let cmd = try runCommand([disttrainBinary, "groups", root + "/dcm.h5", "--order", "stored", "--out", root + "/groups.csv"])
        XCTAssertEqual(cmd.status, 0, cmd.output)
        XCTAssertTrue(cmd.output.contains("adjusted Rand index 1.0000"), cmd.output)
        let rows = try CSV.read(root + "/groups.csv")
        XCTAssertEqual(rows.first?.fields, ["filename", "label", "group", "ncc_previous"])
        XCTAssertEqual(rows.count, 241)
    }

    /// The CT set's layout made synthetic (`synth --format series`: numbered PNGs, split per slice, true
    /// patients in the CSVs' group column): the command walks file numbers and reports its agreement.
    func testGroupsOfANumberedSeriesAgreeWithTheTruePatients() throws {
        let root = makeTempDir("groups-series")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let synth = try runCommand([disttrainBinary, "synth", "--format", "series", "--out", root + "/s", "--n", "240", "--size", "48",
                                    "--slices-per-patient", "12"])
        XCTAssertEqual(synth.status, 0, synth.output)
        let cmd = try runCommand([disttrainBinary, "groups", root + "/s", "--out", root + "/groups.csv"])
        XCTAssertEqual(cmd.status, 0, cmd.output)
        XCTAssertTrue(cmd.output.contains("against the data set's own groups (20): adjusted Rand index 1.0000"), cmd.output)
    }

    /// Byte-identical images are found, and a copy placed next to its original shares its group.
    func testIdenticalImagesShareAGroup() throws {
        let root = makeTempDir("groups-identical")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try writeSyntheticCSVSet(root + "/set", train: 12, val: 2, test: 2, size: 32)
        let copy = try Data(contentsOf: URL(fileURLWithPath: root + "/set/COVID/img (1).png"))
        try copy.write(to: URL(fileURLWithPath: root + "/set/COVID/img (2).png"))  // numbered next to its original
        var csv = try String(contentsOfFile: root + "/set/train.csv", encoding: .utf8)
        csv += "COVID/img (2).png,1.0\n"
        try csv.write(toFile: root + "/set/train.csv", atomically: true, encoding: .utf8)
        let prep = try runCommand([disttrainBinary, "prepare", "--images", root + "/set", "--out", root + "/set.h5"])
        XCTAssertEqual(prep.status, 0, prep.output)
        let ds = try Dataset(path: root + "/set.h5")
        let pairs = try PatientGroups.identicalImages(ds)
        let names = try ds.filenames()
        XCTAssertEqual(pairs.map { [names[$0.0], names[$0.1]].sorted() }, [["COVID/img (1).png", "COVID/img (2).png"]])
        let r = try PatientGroups.infer(ds)
        XCTAssertEqual(r.groups[pairs[0].0], r.groups[pairs[0].1])
    }

    func samples(groups: Int, perGroup: Int) -> [Sample] {
        (0..<groups).flatMap { g in
            (0..<(perGroup + g % 3)).map { i in Sample(file: "g\(g)/\(i).png", label: g % 2, line: 0, group: "p\(g)") }
        }
    }

    /// K folds: every group in exactly one fold's test split, never in two splits of a fold, the folds'
    /// tests partition the data, both classes in every test fold, val carved out of the training folds.
    func testFoldsAreGroupDisjointStratifiedAndSeeded() throws {
        let all = samples(groups: 40, perGroup: 10)
        var seen: [String: Int] = [:]
        for fold in 0..<5 {
            let splits = try GroupSplit(val: 0.1, test: 0, seed: 3, folds: (5, fold)).apply(all)
            let byName = Dictionary(uniqueKeysWithValues: splits)
            let groupsOf = byName.mapValues { Set($0.compactMap(\.group)) }
            XCTAssertTrue(groupsOf["train"]!.isDisjoint(with: groupsOf["val"]!))
            XCTAssertTrue(groupsOf["train"]!.isDisjoint(with: groupsOf["test"]!))
            XCTAssertTrue(groupsOf["val"]!.isDisjoint(with: groupsOf["test"]!))
            XCTAssertEqual(splits.reduce(0) { $0 + $1.1.count }, all.count)
            let test = byName["test"]!
            XCTAssertEqual(Set(test.map(\.label)), [0, 1], "fold \(fold)")
            // Balanced: each fold's test holds a fifth of each class, within one group's size.
            for k in [0, 1] {
                let share = Double(test.filter { $0.label == k }.count) / Double(all.filter { $0.label == k }.count)
                XCTAssertEqual(share, 0.2, accuracy: 0.04, "fold \(fold) class \(k)")
            }
            let valShare = Double(byName["val"]!.count) / Double(all.count - test.count)
            XCTAssertEqual(valShare, 0.1, accuracy: 0.04)
            for g in groupsOf["test"]! { seen[g, default: 0] += 1 }
            // Seeded: the same seed gives the same splits, another seed other ones.
            let again = try GroupSplit(val: 0.1, test: 0, seed: 3, folds: (5, fold)).apply(all)
            XCTAssertEqual(again.map { $0.1.map(\.file) }, splits.map { $0.1.map(\.file) })
        }
        XCTAssertEqual(seen.count, 40)
        XCTAssertTrue(seen.values.allSatisfy { $0 == 1 })
        let other = try GroupSplit(val: 0.1, test: 0, seed: 4, folds: (5, 0)).apply(all)
        let first = try GroupSplit(val: 0.1, test: 0, seed: 3, folds: (5, 0)).apply(all)
        XCTAssertNotEqual(other[2].1.map(\.file), first[2].1.map(\.file))
    }

    /// The command line: `prepare --groups G --split-by group --folds 3 --fold 1` takes the groups CSV;
    /// an image the CSV does not name is refused, naming the image and the CSV.
    func testPrepareTakesAGroupsCSVAndFolds() throws {
        let root = makeTempDir("groups-prepare")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try writeSyntheticCSVSet(root + "/set", train: 24, val: 6, test: 6, size: 32)
        var groups = "filename,label,group\n"
        let files = try ["train", "val", "test"].flatMap { try DatasetSource.parseCSV("\(root)/set/\($0).csv") }
        for (i, s) in files.enumerated() { groups += "\(s.file),\(s.label),\(s.label == 1 ? "C" : "N")\(i / 6)\n" }
        try groups.write(toFile: root + "/groups.csv", atomically: true, encoding: .utf8)
        let prep = try runCommand([disttrainBinary, "prepare", "--images", root + "/set", "--out", root + "/f1.h5", "--groups",
                                   root + "/groups.csv", "--split-by", "group", "--folds", "3", "--fold", "1"])
        XCTAssertEqual(prep.status, 0, prep.output)
        let ds = try Dataset(path: root + "/f1.h5")
        let g = try XCTUnwrap(ds.groups())
        let train = Set(ds[split: .train].map { g[$0] }), test = Set(ds[split: .test].map { g[$0] })
        XCTAssertFalse(test.isEmpty)
        XCTAssertTrue(train.isDisjoint(with: test))
        XCTAssertEqual(ds.count, files.count)

        let short = groups.split(separator: "\n").dropLast().joined(separator: "\n") + "\n"
        try short.write(toFile: root + "/short.csv", atomically: true, encoding: .utf8)
        let bad = try runCommand([disttrainBinary, "prepare", "--images", root + "/set", "--out", root + "/bad.h5", "--groups",
                                  root + "/short.csv", "--split-by", "group"])
        XCTAssertEqual(bad.status, 1, bad.output)
        XCTAssertTrue(bad.output.contains("short.csv names no group for '\(files.last!.file)'"), bad.output)
        let noFold = try runCommand([disttrainBinary, "prepare", "--images", root + "/set", "--out", root + "/bad.h5", "--folds", "3"])
        XCTAssertEqual(noFold.status, 64, noFold.output)
        XCTAssertTrue(noFold.output.contains("--folds and --fold go together"), noFold.output)
    }
}
