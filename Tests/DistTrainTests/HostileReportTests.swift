@testable import DistTrain
import Foundation
import Net
import XCTest

/// Hostile input to `report` and `audit` (issue 25, sections 3 and 4): file and
/// run names are data in every CSV, Markdown and HTML file they read or write,
/// a malformed row is an error naming the file and line, and the audit pairs a
/// shifted, brightened copy with the image it was made from.
final class HostileReportTests: XCTestCase {
    /// A fake evaluated run: report/summary.json and report/predictions.csv (written as eval writes it, through CSV.row).
    @discardableResult
    func fakeRun(_ dir: String, method: String, files: [String], labels: [Int], scores: [Double], csv: String? = nil,
                 wallSeconds: Double? = nil) throws -> String {
        try FileManager.default.createDirectory(atPath: dir + "/report", withIntermediateDirectories: true)
        var text = CSV.row(["split", "index", "file", "label", "p_covid"])
        for (i, (f, (y, p))) in zip(files, zip(labels, scores)).enumerated() { text += CSV.row(["test", "\(i)", f, "\(y)", "\(p)"]) }
        try (csv ?? text).write(toFile: dir + "/report/predictions.csv", atomically: true, encoding: .utf8)
        var s = EvalSummary(checkpoint: "best.h5", val: SplitMetrics(), test: SplitMetrics(lossSum: 1, labels: labels,
                            predictions: scores.map { $0 >= 0.5 ? 1 : 0 }, scores: scores, classes: 2))
        s.method = method; s.run = dir; s.wallSeconds = wallSeconds
        s.evidence = RunEvidence(testLabels: labels, testScores: scores, valLabels: [], valScores: [], resamples: 50)
        let enc = JSONEncoder()
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try enc.encode(s).write(to: URL(fileURLWithPath: dir + "/report/summary.json"))
        return dir
    }

    func summary(_ run: String) throws -> EvalSummary {
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try dec.decode(EvalSummary.self, from: Data(contentsOf: URL(fileURLWithPath: run + "/report/summary.json")))
    }

    // MARK: predictions.csv

    /// File names with a newline, quotes and commas are one field each: split on newlines, the second name
    /// below became extra rows (an ensemble of two 50 % runs read as 100 %).
    func testFileNamesWithNewlinesQuotesAndCommasDoNotInjectRows() throws {
        let root = makeTempDir("hostile-predictions")
        let files = ["a.png", "b.png\",1,0.99\ntest,7,\"c.png", "d,e.png", "f\r\ng.png"]
        let labels = [1, 0, 1, 0]
        // Each run right on two images, wrong on the other two; their mean is right on 0 and 1 only.
        let a = try fakeRun(root + "/scratch-0", method: "scratch", files: files, labels: labels, scores: [0.9, 0.1, 0.2, 0.8])
        let b = try fakeRun(root + "/scratch-1", method: "scratch", files: files, labels: labels, scores: [0.4, 0.6, 0.6, 0.4])
        let p = try XCTUnwrap(try TestPredictions.load(run: a))
        XCTAssertEqual(p.files, files)
        XCTAssertEqual(p.labels, labels)
        XCTAssertEqual(p.scores, [0.9, 0.1, 0.2, 0.8])
        let c = Comparison(summaries: try [a, b].map(summary), runs: [a, b],
                           predictions: try [a, b].map { try TestPredictions.load(run: $0) })
        let group = try XCTUnwrap(c.groups.first)
        XCTAssertEqual(try XCTUnwrap(group.ensemble).files, files)
        XCTAssertEqual(try XCTUnwrap(group.ensembleEvidence).figures.accuracy, 0.5, accuracy: 1e-12)
        let r = try runCommand([disttrainBinary, "report", a, b, "--out", root + "/cmp"])
        XCTAssertEqual(r.status, 0, r.output)
    }

    /// Every malformed predictions.csv ends in exit 1, one line naming the file and line, and no comparison written.
    func testMalformedPredictionsAreRefusedNamingTheFileAndLine() throws {
        let header = "split,index,file,label,p_covid\n"
        let cases: [(String, String)] = [
            (header + "test,0,a.png,1,0.9,extra\n", "line 2: 6 fields, the header has 5"),
            (header + "test,0,a,b.png,1,0.9\n", "line 2: 6 fields, the header has 5"),
            (header + "test,0,a.png,1\n", "line 2: 4 fields, the header has 5"),
            (header + "test,0,a.png,2,0.9\n", "line 2: label '2' is not 0 or 1"),
            (header + "test,0,a.png,1,nan\n", "line 2: 'nan' is not a probability in [0, 1]"),
            (header + "test,0,a.png,1,-nan\n", "line 2: '-nan' is not a probability in [0, 1]"),
            (header + "test,0,a.png,1,1.5\n", "line 2: '1.5' is not a probability in [0, 1]"),
            (header + "test,0,a.png,1,\n", "line 2: '' is not a probability in [0, 1]"),
            (header + "tset,0,a.png,1,0.5\n", "line 2: split 'tset' is not train, val or test"),
            (header + "test,0,\"a.png,1,0.9\n", "line 2: a quoted field is never closed"),
            (header + "test,0,a.png,1,0.9\nval,1,b.png,0,0.1\ntest,2,a.png,0,0.2\n",
             "line 4: test image 'a.png' is listed twice (first on line 2)"),
            ("split,index,name,label,p_covid\ntest,0,a.png,1,0.9\n", "line 1: the header has no column 'file'"),
            ("split,index,file,label\ntest,0,a.png,1\n", "line 1: the last column is not a probability 'p_...'"),
            ("", "predictions.csv: empty"),
        ]
        let root = makeTempDir("bad-predictions")
        for (k, (text, message)) in cases.enumerated() {
            let run = try fakeRun("\(root)/run\(k)", method: "scratch", files: ["a.png"], labels: [1], scores: [0.9], csv: text)
            let out = "\(root)/cmp\(k)"
            let r = try runCommand([disttrainBinary, "report", run, "--out", out])
            XCTAssertEqual(r.status, 1, "\(message): \(r.output)")
            XCTAssertTrue(r.output.contains("\(run)/report/predictions.csv" + (message.hasPrefix("line") ? " " : "")), r.output)
            XCTAssertTrue(r.output.contains(message), "expected '\(message)' in: \(r.output)")
            XCTAssertEqual(r.output.split(separator: "\n").count, 1, r.output)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing written for a run that does not read")
        }
    }

    /// Two runs that give one file different labels are not the same images: no pairing across them.
    func testRunsThatDisagreeOnALabelAreNotPaired() {
        let a = TestPredictions(files: ["x", "y"], labels: [0, 1], scores: [0.2, 0.8])
        XCTAssertEqual(a.aligned(TestPredictions(files: ["y", "x"], labels: [1, 0], scores: [0.7, 0.1])), [0.1, 0.7])
        XCTAssertNil(a.aligned(TestPredictions(files: ["y", "x"], labels: [0, 0], scores: [0.7, 0.1])))
    }

    // MARK: comparison.md, comparison.csv, index.html

    /// Method and run names reach comparison.md as text: no extra cell, row, code span, link or HTML;
    /// comparison.csv quotes them; the page's links cannot become a `javascript:` URL.
    func testNamesAreEscapedInTheMarkdownQuotedInTheCSVAndInertInLinks() throws {
        let root = makeTempDir("hostile-names")
        let method = "a|b\n| x | `c` [l](http://e) <b>*e*</b> _f_ ~~g~~ $h$ &amp; \\"
        let runs = ["\(root)/javascript:alert(1)", "\(root)/r|un\"\n<script>x"]
        for r in runs { try fakeRun(r, method: method, files: ["a.png", "b.png"], labels: [1, 0], scores: [0.9, 0.2]) }
        let c = Comparison(summaries: try runs.map(summary), runs: runs)
        let md = c.markdown
        let table = md.split(separator: "\n", omittingEmptySubsequences: false).prefix { !$0.isEmpty }
        XCTAssertEqual(table.count, 2 + runs.count, md)
        for line in table {
            // Cells are separated by pipes without a backslash before them: one more than the columns.
            var pipes = 0, escaped = false
            for ch in line {
                if ch == "|" && !escaped { pipes += 1 }
                escaped = ch == "\\" && !escaped
            }
            XCTAssertEqual(pipes, Comparison.columns.count + 1, String(line))
        }
        for raw in ["<b>", "<script>", "[l](", "`c`", "*e*", "_f_", "~~g~~", "$h$"] {
            XCTAssertFalse(md.contains(raw), "'\(raw)' raw in: \(md)")
        }
        XCTAssertTrue(md.contains("a\\|b \\| x \\| \\`c\\` \\[l\\](http://e) \\<b\\>\\*e\\*\\</b\\> \\_f\\_ \\~\\~g\\~\\~ \\$h\\$ \\&amp; \\\\"), md)
        // The CSV: one record per run, every field whole.
        let records = try CSV.parse(c.csv, path: "comparison.csv")
        XCTAssertEqual(records.count, 1 + runs.count)
        XCTAssertTrue(records.allSatisfy { $0.fields.count == Comparison.columns.count })
        XCTAssertEqual(records[1].fields[0], method)
        XCTAssertEqual(records[2].fields.last, "r|un\"\n<script>x")
        // The page: every link relative and explicit.
        let html = c.html(relativeTo: root + "/cmp")
        XCTAssertFalse(html.contains("href=\"javascript"), html)
        XCTAssertTrue(html.contains("href=\"../javascript:alert(1)/report/index.html\""), html)
        XCTAssertFalse(html.contains("<script>"), html)
        XCTAssertEqual(hrefPath("javascript:alert(1)/report"), "./javascript:alert(1)/report")
        XCTAssertEqual(hrefPath("../a b/#c?/report"), "../a%20b/%23c%3F/report")
    }

    // MARK: metrics.csv

    /// metrics.csv is read by header name through CSV.parse; a cell that is not a number, a row of the wrong
    /// width or an epoch that is not a whole number is named (an empty epoch trapped in Int(NaN)).
    func testMalformedMetricsCSVIsNamedAndNeverTraps() throws {
        let head = "epoch,train_loss,\"val_accuracy\",test_accuracy\n"
        let cases: [(String, String)] = [
            (head + "1,0.9,0.5,0.5\n,0.7,0.6,0.6\n", "line 3: epoch '' is not a whole number in 0...1000000000"),
            (head + "1e300,0.9,0.5,0.5\n", "line 2: epoch '1e300' is not a whole number"),
            (head + "1.5,0.9,0.5,0.5\n", "line 2: epoch '1.5' is not a whole number"),
            (head + "1,0.9,high,0.5\n", "line 2: val_accuracy 'high' is not a number"),
            (head + "1,0.9,0.5\n", "line 2: 3 fields, the header has 4"),
            (head + "1,0.9,\"0.5\n", "line 2: a quoted field is never closed"),
            ("train_loss,val_accuracy\n0.9,0.5\n", "line 1: the header has no column 'epoch'"),
        ]
        let root = makeTempDir("bad-metrics")
        for (k, (text, message)) in cases.enumerated() {
            let run = try fakeRun("\(root)/run\(k)", method: "scratch", files: ["a.png", "b.png"], labels: [1, 0], scores: [0.9, 0.2])
            try text.write(toFile: run + "/metrics.csv", atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try MetricsLog.rows(ofRun: run), message) { e in
                XCTAssertTrue("\(e)".contains(run + "/metrics.csv " + message), "\(e)")
            }
            let r = try runCommand([disttrainBinary, "report", run, "--out", "\(root)/cmp\(k)"])
            XCTAssertEqual(r.status, 1, r.output)
            XCTAssertTrue(r.output.contains(message), r.output)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(root)/cmp\(k)/comparison.md"), "nothing written")
        }
        // Quoted fields and CRLF are fine; an empty cell is NaN.
        let run = try fakeRun(root + "/good", method: "scratch", files: ["a.png", "b.png"], labels: [1, 0], scores: [0.9, 0.2])
        try (head.replacingOccurrences(of: "\n", with: "\r\n") + "\"1\",0.9,,0.5\r\n").write(toFile: run + "/metrics.csv", atomically: true,
                                                                                                encoding: .utf8)
        let rows = try MetricsLog.rows(ofRun: run)
        XCTAssertEqual(rows.map(\.epoch), [1])
        XCTAssertTrue(rows[0].val.accuracy.isNaN)
        XCTAssertEqual(rows[0].test.accuracy, 0.5)
    }

    /// A summary.json that is not one eval writes is named; a wall time of 1e300 prints as "?" (Int() trapped).
    func testBadSummariesAreNamed() throws {
        let root = makeTempDir("bad-summary")
        let run = try fakeRun(root + "/run", method: "scratch", files: ["a.png", "b.png"], labels: [1, 0], scores: [0.9, 0.2])
        try "{\"checkpoint\": 3}".write(toFile: run + "/report/summary.json", atomically: true, encoding: .utf8)
        let r = try runCommand([disttrainBinary, "report", run, "--out", root + "/cmp"])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("'\(run)/report/summary.json' is not a summary `disttrain eval` writes (wrong type at 'checkpoint')"),
                      r.output)
        let slow = try fakeRun(root + "/run2", method: "scratch", files: ["a.png"], labels: [1], scores: [0.9], wallSeconds: 1e300)
        let r2 = try runCommand([disttrainBinary, "report", slow, "--out", root + "/cmp2"])
        XCTAssertEqual(r2.status, 0, r2.output)
        XCTAssertTrue(try String(contentsOfFile: root + "/cmp2/comparison.md", encoding: .utf8).contains("| ? |"))
    }

    // MARK: audit

    /// A smooth random image: Gaussian blobs (sigma 10-17 px) on 128 x 128, values in about [40, 200], at a
    /// shift (the pattern is a function of position, so a shifted image has no border artefacts).
    func smooth(seed: UInt64, x: Double, y: Double) -> Double {
        var rng = SplitMix(seed)
        var v = 40.0
        for _ in 0..<8 {
            let cx = Double(rng.next() % 128), cy = Double(rng.next() % 128), s = Double(rng.next() % 8) + 10
            v += 90 * exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (2 * s * s))
        }
        return min(v, 200)
    }

    /// Fine texture of +-25 that sums to zero over each 4 x 4 cell (one 32 x 32 thumbnail pixel at 128):
    /// invisible in the thumbnails, plain at full resolution.
    func texture(seed: UInt64) -> [Double] {
        var rng = SplitMix(seed)
        var t = [Double](repeating: 0, count: 128 * 128)
        for cy in 0..<32 { for cx in 0..<32 {
            var signs = [Double](repeating: 25, count: 8) + [Double](repeating: -25, count: 8)
            for i in stride(from: 15, to: 0, by: -1) { signs.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for k in 0..<16 { t[(cy * 4 + k / 4) * 128 + cx * 4 + k % 4] = signs[k] }
        } }
        return t
    }

    /// The test image is train image A shifted by (3, 2) px and brightened by 8. Train image B is the same
    /// smooth pattern already at A's shifted place with other fine texture: at 32 x 32 (4 px a thumbnail pixel)
    /// B matches the copy exactly and A only to within a pixel, so B scores higher there (asserted, so the
    /// test keeps testing this); at full resolution A matches pixel for pixel. The audit must name A.
    func testAuditPairsAShiftedBrightenedCopyWithItsSourceNotTheThumbnailNeighbour() throws {
        let dir = makeTempDir("audit-fine")
        for cls in ["A", "B"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(cls)", withIntermediateDirectories: true) }
        var rows = ["train": "filename,label\n", "val": "filename,label\n", "test": "filename,label\n"]
        func add(_ split: String, _ name: String, _ label: Int, _ value: (Int, Int) -> Double) throws {
            let px = (0..<(128 * 128)).map { UInt8(max(0, min(255, value($0 % 128, $0 / 128).rounded()))) }
            try RasterImage(width: 128, height: 128, channels: 1, pixels: px).writePNG("\(dir)/\(name)")
            rows[split, default: ""] += CSV.row([name, "\(label)"])
        }
        let tA = texture(seed: 11), tB = texture(seed: 12)
        func wrap(_ v: Int) -> Int { (v % 128 + 128) % 128 }
        try add("train", "A/source.png", 0) { x, y in self.smooth(seed: 5, x: Double(x), y: Double(y)) + tA[y * 128 + x] }
        try add("train", "B/neighbour.png", 1) { x, y in self.smooth(seed: 5, x: Double(x - 3), y: Double(y - 2)) + tB[y * 128 + x] }
        for s in 0..<4 {
            try add("train", "\(s % 2 == 0 ? "A" : "B")/other-\(s).png", s % 2) { x, y in
                self.smooth(seed: UInt64(100 + s), x: Double(x), y: Double(y)) + tB[y * 128 + x]
            }
        }
        try add("test", "A/copy.png", 0) { x, y in
            self.smooth(seed: 5, x: Double(x - 3), y: Double(y - 2)) + tA[wrap(y - 2) * 128 + wrap(x - 3)] + 8
        }
        try add("test", "B/fresh.png", 1) { x, y in self.smooth(seed: 200, x: Double(x), y: Double(y)) + tA[y * 128 + x] }
        try add("val", "A/val.png", 0) { x, y in self.smooth(seed: 201, x: Double(x), y: Double(y)) + tB[y * 128 + x] }
        for (split, text) in rows { try text.write(toFile: "\(dir)/\(split).csv", atomically: true, encoding: .utf8) }
        try DatasetSource.detect(dir).prepare(out: dir + "/data.h5")
        let ds = try Dataset(path: dir + "/data.h5")
        XCTAssertEqual([ds.width, ds.height], [128, 128])
        let names = try ds.filenames()
        let train = ds[split: .train]
        let copy = try XCTUnwrap(ds[split: .test].first { names[$0] == "A/copy.png" })
        // The premise: at thumbnail resolution the neighbour beats the source.
        let thumbs = Audit.thumbnailCandidates(trainThumbs: try Audit.thumbnails(ds, train), trainCount: train.count,
                                               queryThumbs: try Audit.thumbnails(ds, [copy]), queryCount: 1, k: train.count)[0]
        XCTAssertEqual(names[train[thumbs.train[0]]], "B/neighbour.png", "the neighbour is the closest thumbnail")
        XCTAssertEqual(names[train[thumbs.train[1]]], "A/source.png")
        XCTAssertGreaterThan(thumbs.scores[1], 0.95, "the source is a near-duplicate by thumbnail too")
        // The audit: the source, at the planted shift, NCC 1 (brightness does not count).
        let r = try Audit.run(ds)
        let m = try XCTUnwrap(r.matches.first { $0.image == copy })
        XCTAssertEqual(names[m.nearest], "A/source.png")
        XCTAssertEqual(try XCTUnwrap(m.fineScore), 1, accuracy: 1e-4)
        XCTAssertEqual([m.fineDX, m.fineDY], [3, 2])
        XCTAssertEqual(m.score, Double(thumbs.scores[0]), accuracy: 1e-6, "the threshold still sees the best thumbnail score")
        XCTAssertEqual(r.duplicated(.test).map { names[$0.image] }, ["A/copy.png"])
        let fresh = try XCTUnwrap(r.matches.first { names[$0.image] == "B/fresh.png" })
        XCTAssertLessThan(try XCTUnwrap(fresh.fineScore), 0.9)
        // The command: audit.csv through CSV.row, read back by column name.
        let out = dir + "/audit"
        let c = try runCommand([disttrainBinary, "audit", dir + "/data.h5", "--out", out, "--threads", "2"])
        XCTAssertEqual(c.status, 0, c.output)
        let records = try CSV.read(out + "/audit.csv")
        let header = try XCTUnwrap(records.first).fields
        XCTAssertEqual(header, ["split", "file", "nearest_train_file", "score", "dx", "dy", "fine_score", "fine_dx", "fine_dy", "label",
                                "nearest_label"])
        XCTAssertEqual(records.count, 1 + 3)
        let row = try XCTUnwrap(records.first { $0.fields[1] == "A/copy.png" }).fields
        XCTAssertEqual(row[2], "A/source.png")
        XCTAssertEqual(Double(row[6]) ?? 0, 1, accuracy: 1e-4)
        XCTAssertEqual([row[7], row[8]], ["3", "2"])
    }
}
