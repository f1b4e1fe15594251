import Foundation
import Net

/// Patients inferred for a data set without patient IDs (`disttrain groups`).
///
/// A CT series exported slice by slice and numbered in order keeps a
/// patient's slices consecutive: neighbouring slices of one scan look alike,
/// the last slice of one patient and the first of the next do not. So, per
/// class, the images are put in file-number order, each image is compared
/// with the one before it (plain normalised cross-correlation of 32 x 32
/// thumbnails, Audit.thumbnails: mean removed, divided by the norms, so
/// brightness and contrast do not count), and the sequence is cut where a
/// pair is `jump` times as dissimilar (1 - NCC) as the class's median
/// consecutive pair. Each run between two cuts is one pseudo-patient.
///
/// Relative, not an absolute NCC: how alike two slices of one scan are
/// depends on slice spacing, resolution and anatomy. On the CT set the median
/// consecutive pair has 1 - NCC = 0.17 (NORMAL) and 0.13 (COVID); on
/// synthetic studies 0.04, where every patient boundary is above 0.2 and an
/// absolute cut of 0.5 finds 2 of 20 patients.
///
/// What this cannot see: two patients whose boundary slices happen to look
/// alike are merged (fewer groups than patients), and a scan with a jump
/// inside (a missing range of slices) is split (more). Merging costs a
/// patient-level split nothing (the merged patients stay on one side);
/// splitting does: the two halves can land on both sides.
public enum PatientGroups {
    /// The jump that starts a new group, chosen on evidence (docs/results/r3/groups.md):
    /// - synthetic DICOM studies (GroupsTests, 20 patients of 12 slices): every jump in 2...5
    ///   recovers the patients exactly (adjusted Rand index 1);
    /// - the CT set: a 1-nearest-neighbour lookup on group-disjoint 20 % test splits scores
    ///   70 % at jump 2 (326 groups), 66 % at 2.5, and 64.0, 63.5, 62.9, 61.3 % at 3, 3.5, 4, 5:
    ///   below 3, split patients still leak; from 3 on, the score is flat within its spread
    ///   (+-4.5 over 20 splits). 3 is the smallest jump on that plateau, so the most groups
    ///   (138; the data set's paper reports 120 patients) without measurable leakage.
    public static let defaultJump = 3.0

    /// The order the images are walked in: by the number in the file name (the
    /// CT set's `Covid (17).png`), or as stored in the data set (DICOM sources,
    /// which `prepare` stores series by series in slice-position order).
    public enum Order: String, CaseIterable, Sendable { case number, stored }

    public struct Result: Sendable {
        /// For every image of the data set: its inferred group, e.g. "COVID-007".
        public var groups: [String]
        /// For every image: the NCC with the image before it in its class's order (nil for the first).
        public var previousNCC: [Double?]
        /// Per class index: the NCC below which a pair was cut.
        public var threshold: [Int: Double]
        public var labels: [Int]

        public var count: Int { Set(groups).count }

        /// Group sizes, in no particular order.
        public var sizes: [Int] {
            var n: [String: Int] = [:]
            for g in groups { n[g, default: 0] += 1 }
            return Array(n.values)
        }

        /// How many groups another jump would give (the same NCCs, cut elsewhere).
        public func groupCount(jump: Double) -> Int {
            var n = 0
            for k in Set(labels) {
                let d = labels.indices.filter { labels[$0] == k }.compactMap { previousNCC[$0].map { 1 - $0 } }
                n += 1 + d.filter { $0 > jump * PatientGroups.median(d) }.count
            }
            return n
        }
    }

    static func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// The number a file name carries: the last run of decimal digits in its last
    /// path component, e.g. 17 for "COVID/Covid (17).png"; nil when it has none.
    public static func fileNumber(_ name: String) -> Int? {
        let base = (name as NSString).lastPathComponent
        var digits = "", last: String? = nil
        for ch in base {
            if ch.isASCII && ch.isNumber { digits.append(ch) } else if !digits.isEmpty { last = digits; digits = "" }
        }
        if !digits.isEmpty { last = digits }
        return last.flatMap { Int($0.prefix(18)) }
    }

    /// The images of one class in walking order: by file number (then by name, for ties
    /// and names without a number, which go last), or in stored order.
    static func walk(_ indices: [Int], names: [String], order: Order) -> [Int] {
        guard order == .number else { return indices }
        return indices.sorted { a, b in
            switch (fileNumber(names[a]), fileNumber(names[b])) {
            case let (x?, y?) where x != y: return x < y
            case (_?, nil): return true
            case (nil, _?): return false
            default: return names[a] == names[b] ? a < b : names[a] < names[b]
            }
        }
    }

    /// Plain NCC of two thumbnails (n values each); 0 when either is flat.
    static func ncc(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        let n = Double(a.count)
        var sa = 0.0, sb = 0.0
        for (x, y) in zip(a, b) { sa += Double(x); sb += Double(y) }
        let ma = sa / n, mb = sb / n
        var ab = 0.0, aa = 0.0, bb = 0.0
        for (x, y) in zip(a, b) {
            let dx = Double(x) - ma, dy = Double(y) - mb
            ab += dx * dy; aa += dx * dx; bb += dy * dy
        }
        return aa > 0 && bb > 0 ? ab / (aa * bb).squareRoot() : 0
    }

    /// Every image of the data set (all splits, and any image in none) grouped, class by class: cut where
    /// 1 - NCC > jump x the class's median, or, with `cut`, where the NCC is below that absolute value.
    public static func infer(_ ds: Dataset, jump: Double = defaultJump, cut: Double? = nil, order: Order = .number) throws -> Result {
        let names = try ds.filenames()
        guard names.count == ds.count else { throw RuntimeError("'\(ds.path)': \(names.count) file names for \(ds.count) images") }
        let thumbs = try Audit.thumbnails(ds, Array(0..<ds.count))
        let T = Audit.thumbnail * Audit.thumbnail
        var groups = [String](repeating: "", count: ds.count), previous = [Double?](repeating: nil, count: ds.count)
        var thresholds: [Int: Double] = [:]
        for k in Set(ds.labels).sorted() {
            let className = ds.classNames.indices.contains(k) ? ds.classNames[k] : "class\(k)"
            let sequence = walk(ds.labels.indices.filter { ds.labels[$0] == k }, names: names, order: order)
            let scores = zip(sequence, sequence.dropFirst()).map { p, i in ncc(thumbs[(p * T)..<((p + 1) * T)], thumbs[(i * T)..<((i + 1) * T)]) }
            let threshold = cut ?? 1 - jump * median(scores.map { 1 - $0 })
            thresholds[k] = threshold
            var group = 1
            for (n, i) in sequence.enumerated() {
                if n > 0 {
                    previous[i] = scores[n - 1]
                    if scores[n - 1] < threshold { group += 1 }
                }
                groups[i] = String(format: "%@-%03d", className, group)
            }
        }
        return Result(groups: groups, previousNCC: previous, threshold: thresholds, labels: ds.labels)
    }

    /// Pairs of images with the same bytes (the CT set has two), by index; an image with several
    /// copies pairs with the first of them.
    public static func identicalImages(_ ds: Dataset) throws -> [(Int, Int)] {
        // By a 64-bit FNV-1a hash of each image first (memory stays one chunk), then byte by byte within a bucket.
        var buckets: [UInt64: [Int]] = [:]
        let n = ds.channels * ds.height * ds.width
        var start = 0
        while start < ds.count {
            let chunk = Array(start..<min(start + 256, ds.count))
            let bytes = try ds.readImages(chunk)
            for (k, i) in chunk.enumerated() {
                var h: UInt64 = 0xcbf2_9ce4_8422_2325
                for b in bytes[(k * n)..<((k + 1) * n)] { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
                buckets[h, default: []].append(i)
            }
            start += chunk.count
        }
        var pairs: [(Int, Int)] = []
        for members in buckets.values where members.count > 1 {
            let images = try ds.readImages(members)
            func image(_ k: Int) -> ArraySlice<UInt8> { images[(k * n)..<((k + 1) * n)] }
            var firsts: [Int] = []
            for k in members.indices {
                if let f = firsts.first(where: { image($0) == image(k) }) { pairs.append((members[f], members[k])) } else { firsts.append(k) }
            }
        }
        return pairs.sorted { $0.0 < $1.0 }
    }

    /// The adjusted Rand index of two labellings of the same items (Hubert & Arabie 1985):
    /// 1 for the same partition, about 0 for independent ones; 1 when both put everything in one
    /// group or each item alone (the index is undefined there and the partitions are equal).
    public static func adjustedRandIndex(_ a: [String], _ b: [String]) -> Double {
        precondition(a.count == b.count)
        func pairs(_ n: Int) -> Double { Double(n) * Double(n - 1) / 2 }
        var table: [String: [String: Int]] = [:], rows: [String: Int] = [:], cols: [String: Int] = [:]
        for (x, y) in zip(a, b) { table[x, default: [:]][y, default: 0] += 1; rows[x, default: 0] += 1; cols[y, default: 0] += 1 }
        let index = table.values.reduce(0.0) { $0 + $1.values.reduce(0.0) { $0 + pairs($1) } }
        let sumA = rows.values.reduce(0.0) { $0 + pairs($1) }, sumB = cols.values.reduce(0.0) { $0 + pairs($1) }
        let expected = sumA * sumB / max(pairs(a.count), 1)
        let maximum = (sumA + sumB) / 2
        return maximum == expected ? 1 : (index - expected) / (maximum - expected)
    }

    /// groups.csv: `filename,label,group,ncc_previous` for every image, in the data set's order, the rows
    /// `prepare --groups` reads (label as the class index, filename as stored: relative to the source folder;
    /// ncc_previous: the NCC with the image before it in its class's walk, empty for the first, so that a reader
    /// can cut elsewhere without recomputing).
    public static func csv(_ r: Result, _ ds: Dataset) throws -> String {
        let names = try ds.filenames()
        var text = CSV.row(["filename", "label", "group", "ncc_previous"])
        for i in 0..<ds.count {
            text += CSV.row([names[i], String(ds.labels[i]), r.groups[i], r.previousNCC[i].map { String(format: "%.6f", $0) } ?? ""])
        }
        return text
    }

    /// The group of every listed file from a groups CSV (`filename,...,group`: the first column and the one
    /// named group; other columns ignored). A file named twice with two groups is refused.
    public static func read(_ path: String) throws -> [String: String] {
        if let problem = DatasetSource.regularFileProblem(path) { throw RuntimeError(problem) }
        let records = try CSV.read(path)
        guard let head = records.first else { throw RuntimeError("\(path) is empty: expected a header 'filename,...,group'") }
        let header = head.fields.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard header.first == "filename", let g = header.firstIndex(of: "group") else {
            throw RuntimeError("\(path) line \(head.line): expected a header with 'filename' first and a 'group' column")
        }
        var out: [String: String] = [:]
        for r in records.dropFirst() where !r.fields.allSatisfy({ $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
            guard r.fields.count == header.count else {
                throw RuntimeError("\(path) line \(r.line): \(r.fields.count) fields where the header has \(header.count)")
            }
            let file = r.fields[0].trimmingCharacters(in: .whitespaces), group = r.fields[g].trimmingCharacters(in: .whitespaces)
            guard !file.isEmpty, !group.isEmpty else { throw RuntimeError("\(path) line \(r.line): empty filename or group") }
            if let old = out[file], old != group {
                throw RuntimeError("\(path) line \(r.line): '\(DatasetSource.oneLine(file))' is in group '\(old)' already")
            }
            out[file] = group
        }
        return out
    }
}
