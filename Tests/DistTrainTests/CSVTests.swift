@testable import DistTrain
import XCTest

/// The one CSV dialect disttrain writes and reads (RFC 4180, as pandas).
final class CSVTests: XCTestCase {
    func testFieldsThatNeedQuotesRoundTrip() throws {
        let rows = [["file", "p"], ["a,b.png", "0.5"], ["say \"hi\".png", "1"], ["two\nlines.png", ""], ["cr\r\nlf", "x"], ["", ""]]
        let text = rows.map(CSV.row).joined()
        XCTAssertEqual(CSV.row(["a,b", "plain"]), "\"a,b\",plain\n")
        let back = try CSV.parse(text, path: "t.csv")
        XCTAssertEqual(back.map(\.fields), rows)
        XCTAssertEqual(back.map(\.line), [1, 2, 3, 4, 6, 8])
    }

    func testCRLFBlankLinesAndSpacesAfterAClosingQuote() throws {
        let r = try CSV.parse("h1,h2\r\n\r\n\"x\" ,1\r\ny,2\r\nz, \"a, b\"\n", path: "t.csv")
        XCTAssertEqual(r.map(\.fields), [["h1", "h2"], ["x", "1"], ["y", "2"], ["z", "a, b"]])
        XCTAssertEqual(r.map(\.line), [1, 3, 4, 5])
    }

    func testReadOpensOnlyRegularFiles() throws {
        let fifo = makeTempDir("csv-fifo") + "/p.csv"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try CSV.read(fifo)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
    }

    func testMalformedQuotingIsAnErrorNamingTheLine() {
        XCTAssertThrowsError(try CSV.parse("a,b\n\"open,1\n", path: "t.csv")) { XCTAssertTrue("\($0)".contains("t.csv line 2"), "\($0)") }
        XCTAssertThrowsError(try CSV.parse("a,b\n\"x\"y,1\n", path: "t.csv")) { XCTAssertTrue("\($0)".contains("after a closing quote"), "\($0)") }
        XCTAssertThrowsError(try CSV.parse("a,b\nx\"y,1\n", path: "t.csv")) { XCTAssertTrue("\($0)".contains("line 2"), "\($0)") }
    }

    /// An error quotes what it names on one line: a file name with CR, LF or another line break
    /// cannot add (or forge) a line of the message.
    func testRuntimeErrorsStayOneLine() {
        XCTAssertEqual(RuntimeError("'a\nb.png': bad\r\u{2028}x\u{85}y").description, "'a\\nb.png': bad\\r\\u{2028}x\\u{85}y")
        XCTAssertEqual(RuntimeError("plain 'x y.png'\t1").description, "plain 'x y.png'\t1")
    }
}
