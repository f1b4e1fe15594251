import DistTrain
import Foundation
import XCTest

/// The event files a run writes: TFRecord framing with masked CRC-32C, and
/// Event/Summary protobufs whose scalars are metrics.csv's. (TensorBoard's own
/// reader checks the same in Tests/Fixtures/check_tensorboard.py, dev-time.)
final class TensorBoardTests: XCTestCase {
    /// (step, tag, value) of every simple_value in an event record.
    func scalars(_ event: [UInt8]) -> [(Int, String, Float)] {
        var out: [(Int, String, Float)] = []
        func fields(_ b: ArraySlice<UInt8>, _ visit: (Int, Int, ArraySlice<UInt8>, UInt64) -> Void) {
            var p = b.startIndex
            func varint() -> UInt64 {
                var v: UInt64 = 0, shift: UInt64 = 0
                while true { let x = b[p]; p += 1; v |= UInt64(x & 0x7F) << shift; shift += 7; if x < 0x80 { return v } }
            }
            while p < b.endIndex {
                let key = varint(), field = Int(key >> 3), wire = Int(key & 7)
                switch wire {
                case 0: visit(field, wire, [], varint())
                case 1: visit(field, wire, b[p..<(p + 8)], 0); p += 8
                case 5: visit(field, wire, b[p..<(p + 4)], 0); p += 4
                default: let n = Int(varint()); visit(field, wire, b[p..<(p + n)], 0); p += n
                }
            }
        }
        var step = 0
        var values: [(String, Float)] = []
        fields(event[...]) { field, _, bytes, v in
            if field == 2 { step = Int(v) }
            if field == 5 {
                fields(bytes) { f, _, value, _ in
                    guard f == 1 else { return }
                    var tag = "", x: Float = .nan
                    fields(value) { g, wire, b, _ in
                        if g == 1 { tag = String(decoding: b, as: UTF8.self) }
                        if g == 2 && wire == 5 {
                            x = Float(bitPattern: b.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) })
                        }
                    }
                    if !x.isNaN { values.append((tag, x)) }
                }
            }
        }
        for (t, x) in values { out.append((step, t, x)) }
        return out
    }

    func testEventFilesHoldTheMetricsWithValidCRCs() throws {
        let run = makeTempDir("tensorboard")
        let data = preparedSyntheticSet("tb-data", train: 8, val: 2, test: 2)
        let a = try runCommand([disttrainBinary, "--data", data, "--run", run, "--epochs", "2", "--batch-size", "4", "--image-size", "32",
                                "--width", "4", "--threads", "1", "--stop-after", "1"], timeout: 120)
        XCTAssertEqual(a.status, 0, a.output)
        let b = try runCommand([disttrainBinary, "resume", run, "--threads", "1"], timeout: 120)
        XCTAssertEqual(b.status, 0, b.output)
        let files = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("events.out.tfevents.") }.sorted()
        XCTAssertEqual(files.count, 3, "first run, resumed run, evaluation")
        var found: [String: Float] = [:], stepLosses = 0
        for f in files {
            let records = try EventReader.records(run + "/" + f)
            XCTAssertEqual(String(decoding: records[0].suffix(13), as: UTF8.self), "brain.Event:2")
            for r in records { for (step, tag, v) in scalars(r) {
                if tag == "loss/train_step" { stepLosses += 1 } else { found["\(tag)@\(step)"] = v }
            } }
        }
        XCTAssertEqual(stepLosses, 4, "2 epochs x 2 steps")
        let rows = try String(contentsOfFile: run + "/metrics.csv", encoding: .utf8).split(separator: "\n")
            .map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        let col = Dictionary(uniqueKeysWithValues: rows[0].enumerated().map { (String($1), $0) })
        for row in rows.dropFirst() {
            let pairs = [("loss/val", "val_loss"), ("accuracy/test", "test_accuracy"), ("lr", "lr"), ("loss/train", "train_loss")]
            for (tag, column) in pairs {
                let want = Double(row[col[column]!])!
                let got = try XCTUnwrap(found["\(tag)@\(row[0])"], "\(tag) at epoch \(row[0])")
                XCTAssertEqual(Double(got), want, accuracy: 1e-5 * max(1, abs(want)) + 1e-6, "\(tag) at epoch \(row[0])")
            }
        }
        // A flipped byte is named by the CRC check.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: run + "/" + files[0]))
        bytes[bytes.count - 6] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: run + "/corrupt"))
        XCTAssertThrowsError(try EventReader.records(run + "/corrupt")) { XCTAssertTrue("\($0)".contains("CRC"), "\($0)") }
    }
}
