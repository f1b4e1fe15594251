@testable import DistTrain
import Foundation
import XCTest

/// `report --folds`: patient-level figures and the patient bootstrap, on cases whose answers are known.
final class CrossValidationTests: XCTestCase {
    /// Every draw holds whole groups, as many groups of each class as there are.
    func testGroupResamplesKeepPatientsWhole() {
        let groups = (0..<30).map { "p\($0 / 3)" }, labels = (0..<30).map { ($0 / 3) % 2 }  // 10 patients of 3 slices
        let draws = Stats.groupResamples(labels: labels, groups: groups, count: 50, seed: 7)
        for d in draws {
            XCTAssertEqual(d.count, 30)
            var n: [String: Int] = [:]
            for i in d { n[groups[i], default: 0] += 1 }
            XCTAssertTrue(n.values.allSatisfy { $0 % 3 == 0 }, "a patient was split")
            XCTAssertEqual(d.filter { labels[$0] == 1 }.count, 15)
        }
        XCTAssertEqual(draws.map { $0 }, Stats.groupResamples(labels: labels, groups: groups, count: 50, seed: 7))
    }

    func fold(_ run: String, _ method: String, files: [String], labels: [Int], scores: [Double], groups: [String]) -> CrossValidation.Fold {
        CrossValidation.Fold(run: run, method: method, files: files, labels: labels, scores: scores, groups: groups)
    }

    func testPatientLevelIsTheMeanOfItsSlices() {
        let p = CrossValidation.patients(labels: [1, 1, 0, 0, 0], scores: [0.9, 0.3, 0.2, 0.7, 0.4], groups: ["a", "a", "b", "b", "b"])
        XCTAssertEqual(p.names, ["a", "b"])
        XCTAssertEqual(p.labels, [1, 0])
        XCTAssertEqual(p.scores[0], 0.6, accuracy: 1e-12)
        XCTAssertEqual(p.scores[1], 1.3 / 3, accuracy: 1e-12)
    }

    /// Pooled figures are those of the concatenated folds; two identical methods differ by exactly 0 with
    /// McNemar p = 1; a method right on every patient where the other is wrong on some is found better.
    func testPooledFiguresAndThePairedTest() throws {
        var files: [[String]] = [[], []], labels: [[Int]] = [[], []], good: [[Double]] = [[], []], bad: [[Double]] = [[], []],
            groups: [[String]] = [[], []]
        for p in 0..<40 {
            let f = p % 2, y = (p / 2) % 2
            for s in 0..<4 {
                files[f].append("p\(p)-\(s).png"); labels[f].append(y); groups[f].append("P\(p)")
                good[f].append(y == 1 ? 0.8 : 0.2)
                bad[f].append(p % 5 == 0 ? (y == 1 ? 0.3 : 0.7) : good[f].last!)  // wrong on every 5th patient
            }
        }
        let scratch = (0..<2).map { fold("cv/fold-\($0)/scratch", "scratch", files: files[$0], labels: labels[$0], scores: bad[$0], groups: groups[$0]) }
        let transfer = (0..<2).map { fold("cv/fold-\($0)/transfer", "transfer", files: files[$0], labels: labels[$0], scores: good[$0], groups: groups[$0]) }
        let m = CrossValidation.summarise("scratch", scratch)
        XCTAssertEqual(m.slice.value.accuracy, 0.8, accuracy: 1e-12)
        XCTAssertEqual(m.patients, 40)
        XCTAssertEqual(m.patient.value.accuracy, 0.8, accuracy: 1e-12)
        XCTAssertEqual(m.foldAccuracy.count, 2)
        XCTAssertTrue(m.grouped)

        let same = try XCTUnwrap(CrossValidation.pair(scratch + scratch.map { var f = $0; f.method = "transfer"; return f }))
        XCTAssertEqual(same.accuracyDifference, 0)
        XCTAssertEqual(same.accuracyInterval.lower, 0); XCTAssertEqual(same.accuracyInterval.upper, 0)
        XCTAssertEqual(same.mcnemarP, 1)

        let better = try XCTUnwrap(CrossValidation.pair(scratch + transfer))
        XCTAssertEqual(better.accuracyDifference, 0.2, accuracy: 1e-12)
        XCTAssertGreaterThan(better.accuracyInterval.lower, 0)
        XCTAssertEqual(better.onlyTransfer, 8); XCTAssertEqual(better.onlyScratch, 0)
        XCTAssertEqual(better.sliceOnlyTransfer, 32)
        // Patients, not slices: the same 8 discordant patients as 32 slices would look far more certain.
        XCTAssertLessThan(better.sliceMcnemarP, better.mcnemarP)

        XCTAssertEqual(better.folds, 2)

        // A cross-validation still running: transfer has fold 0 only. The pair is over that fold alone.
        let partial = try XCTUnwrap(CrossValidation.pair(scratch + [transfer[0]]))
        XCTAssertEqual([partial.folds, partial.images, partial.patients], [1, 80, 20])
        XCTAssertEqual(partial.onlyTransfer, 4)
        let cv = try CrossValidation(folds: scratch + [transfer[0]])
        XCTAssertTrue(cv.verdict.contains("predictions on the 1 fold both methods have so far, of 20 patients"), cv.verdict)

        // A transfer fold holding none of scratch's images is a fold scratch lacks: the pair is over the other one;
        // folds of another cross-validation (no image shared, or a fold shared in part) are refused.
        var other = transfer
        other[1].files = other[1].files.map { "x" + $0 }
        XCTAssertEqual(try CrossValidation.pair(scratch + other)?.folds, 1)
        other[0].files = other[0].files.map { "x" + $0 }
        XCTAssertThrowsError(try CrossValidation.pair(scratch + other), "no shared image at all")
        var half = transfer
        half[1].files = half[1].files.enumerated().map { $0.offset % 2 == 0 ? "x" + $0.element : $0.element }
        XCTAssertThrowsError(try CrossValidation.pair(scratch + half), "a fold shared in part")
    }
}
