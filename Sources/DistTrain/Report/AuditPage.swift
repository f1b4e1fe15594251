import Foundation

/// audit.csv and a page of the closest val/test-train pairs side by side.
enum AuditPage {
    static func write(_ r: Audit.Result, dataset ds: Dataset, to dir: String, show: Int) throws {
        try FileManager.default.createDirectory(atPath: dir + "/pairs", withIntermediateDirectories: true)
        let names = try ds.filenames()
        guard names.count == ds.labels.count else {
            throw RuntimeError("\(ds.path): \(names.count) file names for \(ds.labels.count) images")
        }
        // Every field through CSV.row: file names are data (a comma, quote or newline stays inside its field).
        var csv = CSV.row(["split", "file", "nearest_train_file", "score", "dx", "dy", "fine_score", "fine_dx", "fine_dy", "label",
                           "nearest_label"])
        for m in r.matches {
            csv += CSV.row([m.split.rawValue, names[m.image], names[m.nearest], String(format: "%.6f", m.score), "\(m.dx)", "\(m.dy)",
                            m.fineScore.map { String(format: "%.6f", $0) } ?? "", m.fineDX.map(String.init) ?? "",
                            m.fineDY.map(String.init) ?? "", "\(ds.labels[m.image])", "\(ds.labels[m.nearest])"])
        }
        try durableWrite(dir + "/audit.csv", data: Data(csv.utf8))
        // Score distribution per split, and the closest pairs.
        let edges = [0.0, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0001]
        var histogram = "<table><tr><th>split</th>"
            + zip(edges, edges.dropFirst()).map { "<th>\($0)-\(min($1, 1))</th>" }.joined() + "</tr>"
        for split in [Split.val, .test] {
            let s = r.matches.filter { $0.split == split }.map(\.score)
            guard !s.isEmpty else { continue }
            histogram += "<tr><td>\(split.rawValue)</td>"
                + zip(edges, edges.dropFirst()).map { lo, hi in "<td>\(s.filter { $0 >= lo && $0 < hi }.count)</td>" }.joined() + "</tr>"
        }
        histogram += "</table>"
        var rows = ""
        for (k, m) in r.matches.sorted(by: { $0.score > $1.score }).prefix(show).enumerated() {
            for (side, index) in [("a", m.image), ("b", m.nearest)] {
                let img = try RasterImage(width: ds.width, height: ds.height, channels: ds.channels, pixels: hwc(ds, index))
                try img.resized(width: 112, height: 112).writePNG("\(dir)/pairs/\(k)-\(side).png")
            }
            let fine = m.fineScore.map { String(format: " (%.4f)", $0) } ?? ""
            rows += "<tr><td>\(String(format: "%.4f", m.score))\(fine)</td><td>\(m.split.rawValue)<br>\(htmlEscape(names[m.image]))</td>"
                + "<td><img src=\"pairs/\(k)-a.png\"></td><td><img src=\"pairs/\(k)-b.png\"></td>"
                + "<td>\(htmlEscape(names[m.nearest]))</td></tr>"
        }
        let crossing = r.crossingGroups.map { c in
            c.isEmpty ? "<p>Groups (patients): none has images in more than one split.</p>"
                : "<p><b>\(c.count) groups (patients) have images in more than one split</b>: "
                    + htmlEscape(c.prefix(20).joined(separator: ", ")) + (c.count > 20 ? ", ..." : "") + "</p>"
        } ?? ""
        let dup = [Split.val, .test].map { s in "\(s.rawValue): \(r.duplicated(s).count) of \(r.matches.filter { $0.split == s }.count)" }
        let html = """
        <!doctype html><html><head><meta charset="utf-8"><title>disttrain audit</title>
        <style>body{font-family:sans-serif;margin:24px} td,th{border:1px solid #ccc;padding:4px 8px} table{border-collapse:collapse}</style>
        </head><body><h1>Near-duplicates between splits</h1>
        <p>Data set <code>\(htmlEscape(ds.path))</code>. For each val and test image, the most similar train image by normalised
        cross-correlation (NCC) of 32x32 thumbnails, the query's central 28x28 crop slid over +-2 px; the \(Audit.candidates) best
        are compared again at full resolution (+-\(Audit.fineShift) px around their thumbnail offset) and the best there is shown
        as the nearest. The score is the thumbnail NCC; images at or above
        \(String(format: "%.2f", r.threshold)): \(dup.joined(separator: ", ")). 1-nearest-neighbour baseline (the nearest train
        image's label) on test: \(String(format: "%.4f", r.nearestNeighbourAccuracy)).</p>
        \(crossing)
        <h2>Scores</h2>\(histogram)
        <h2>The \(min(show, r.matches.count)) closest pairs</h2>
        <table><tr><th>NCC (at full resolution)</th><th>image</th><th></th><th>nearest train image</th><th></th></tr>\(rows)</table>
        </body></html>
        """
        try durableWrite(dir + "/index.html", data: Data(html.utf8))
    }

    /// Stored CHW bytes of one image as HWC.
    static func hwc(_ ds: Dataset, _ index: Int) throws -> [UInt8] {
        let chw = try ds.readImages([index]), C = ds.channels, HW = ds.height * ds.width
        var out = [UInt8](repeating: 0, count: chw.count)
        for c in 0..<C { for p in 0..<HW { out[p * C + c] = chw[c * HW + p] } }
        return out
    }
}
