import Foundation

/// One image of a source folder, with the CSV line that named it (0 for class
/// folders) and its group (the patient or scan, from a CSV `group` column, a
/// DICOM PatientID or a NIfTI volume); `frame` picks a frame of a multi-frame
/// DICOM file or a slice of a volume.
public struct Sample: Sendable {
    public var file: String, label: Int, line: Int
    public var group: String? = nil
    public var frame: Int? = nil

    /// The name stored in the data set: the file, with "#frame" when it has frames.
    public var name: String { frame.map { "\(file)#\($0)" } ?? file }
}

/// A folder of images with its splits, and `prepare`, which turns it into a data set.
public enum DatasetSource {
    /// Folder with train.csv (and val.csv, test.csv): `filename,label` rows.
    case csv(dir: String)
    /// ImageFolder: dir/{train,val,test}/<class>/<image>.
    case folders(dir: String)
    /// DICOM series or NIfTI volumes (split by patient when prepared).
    case medical(MedicalSource)

    public static func detect(_ dir: String) throws -> DatasetSource {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw RuntimeError("data folder '\(dir)' does not exist")
        }
        if fm.fileExists(atPath: dir + "/train.csv") { return .csv(dir: dir) }
        if fm.fileExists(atPath: dir + "/train", isDirectory: &isDir), isDir.boolValue { return .folders(dir: dir) }
        if try MedicalSource.holdsMedicalImages(dir) {
            let labels = dir + "/labels.csv"
            return .medical(MedicalSource(dir: dir, labels: fm.fileExists(atPath: labels) ? labels : nil))
        }
        throw RuntimeError("'\(dir)' has neither train.csv (CSV splits), train/<class>/ folders (ImageFolder), "
                           + "nor DICOM files or NIfTI volumes")
    }

    var dir: String {
        switch self {
        case .csv(let d), .folders(let d): return d
        case .medical(let m): return m.dir
        }
    }

    /// One listed image as 8-bit pixels (DICOM and NIfTI windowed).
    func image(_ s: Sample, maxPixels: Int) throws -> RasterImage {
        if case .medical(let m) = self { return try m.image(s) }
        return try RasterImage.read(dir + "/" + s.file, maxPixels: maxPixels)
    }

    /// Samples per split and the class names, with every problem named by file and line.
    func listing() throws -> (splits: [(String, [Sample])], classNames: [String]) {
        let fm = FileManager.default
        switch self {
        case .csv(let dir):
            var splits: [(String, [Sample])] = []
            for name in ["train", "val", "test"] {
                let csv = "\(dir)/\(name).csv"
                guard fm.fileExists(atPath: csv) else { continue }
                splits.append((name, try DatasetSource.parseCSV(csv)))
            }
            let maxLabel = splits.flatMap { $0.1 }.map(\.label).max() ?? 0
            // Class names from the first folder of each label's files when consistent (NORMAL/, COVID/).
            var names: [String] = []
            for k in 0...maxLabel {
                let files = splits.flatMap { $0.1 }.filter { $0.label == k }.map(\.file)
                let folders = Set(files.map { $0.split(separator: "/").dropLast().first.map(String.init) ?? "" })
                names.append(folders.count == 1 && !folders.first!.isEmpty ? folders.first! : "\(k)")
            }
            return (splits, names)
        case .folders(let dir):
            let classNames = try fm.contentsOfDirectory(atPath: dir + "/train").filter { n in
                var d: ObjCBool = false
                return fm.fileExists(atPath: "\(dir)/train/\(n)", isDirectory: &d) && d.boolValue
            }.sorted()
            guard !classNames.isEmpty else { throw RuntimeError("'\(dir)/train' has no class folders") }
            var splits: [(String, [Sample])] = []
            for name in ["train", "val", "test"] where fm.fileExists(atPath: "\(dir)/\(name)") {
                var samples: [Sample] = []
                for (k, cls) in classNames.enumerated() {
                    let sub = "\(dir)/\(name)/\(cls)"
                    guard fm.fileExists(atPath: sub) else { continue }
                    for f in try fm.contentsOfDirectory(atPath: sub).sorted() where DatasetSource.isImage(f) {
                        samples.append(Sample(file: "\(name)/\(cls)/\(f)", label: k, line: 0))
                    }
                }
                splits.append((name, samples))
            }
            return (splits, classNames)
        case .medical(let m):
            let (samples, names) = try m.listing()
            return ([("all", samples)], names)
        }
    }

    static func isImage(_ f: String) -> Bool {
        let l = f.lowercased()
        return l.hasSuffix(".png") || l.hasSuffix(".jpg") || l.hasSuffix(".jpeg")
    }

    /// Class indices are below this (a label of 1e9 is a typo, not 10^9 classes).
    static let maxClasses = 10_000

    /// `filename,label[,group]` with a header; labels integral ("1", "1.0"). Read as RFC
    /// 4180 (CSV.parse), so a quoted field may hold commas, quotes and newlines. Without a
    /// group column an unquoted filename may still hold commas, as before quoting was read:
    /// the label is after the last one.
    static func parseCSV(_ path: String) throws -> [Sample] {
        if let problem = regularFileProblem(path) { throw RuntimeError(problem) }
        let records = try CSV.read(path).filter { r in !r.fields.allSatisfy { $0.trimmingCharacters(in: .whitespaces).isEmpty } }
        func shown(_ r: CSV.Record) -> String { oneLine(String(CSV.row(r.fields).dropLast())) }
        guard let head = records.first else { return [] }
        let header = head.fields.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard header.first == "filename", header.count >= 2, header[1] == "label" else {
            throw RuntimeError("\(path) line \(head.line): expected the header 'filename,label' (or 'filename,label,group'), "
                               + "got '\(shown(head))'")
        }
        let grouped = header.count >= 3 && header[2] == "group"
        var out: [Sample] = []
        for r in records.dropFirst() {
            var fields = r.fields.map { $0.trimmingCharacters(in: .whitespaces) }, group: String? = nil
            if grouped {
                guard fields.count == 3 else {
                    throw RuntimeError("\(path) line \(r.line): expected 'filename,label,group', got '\(shown(r))'")
                }
                group = fields[2]
            } else {
                guard fields.count >= 2 else { throw RuntimeError("\(path) line \(r.line): expected 'filename,label', got '\(shown(r))'") }
                if fields.count > 2 {
                    fields = [r.fields.dropLast().joined(separator: ",").trimmingCharacters(in: .whitespaces), fields[fields.count - 1]]
                }
            }
            let file = fields[0], labelText = fields[1]
            guard let v = Double(labelText), v.isFinite, v >= 0, v < Double(maxClasses), v == v.rounded(), !file.isEmpty else {
                throw RuntimeError("\(path) line \(r.line): bad label '\(oneLine(labelText))' "
                                   + "(a class index 0...\(maxClasses - 1) such as 0 or 1.0)")
            }
            guard !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
                throw RuntimeError("\(path) line \(r.line): image path '\(oneLine(file))' leaves the data folder (absolute or '..'); "
                                   + "paths are relative to the folder of the CSV")
            }
            if let g = group, g.isEmpty { throw RuntimeError("\(path) line \(r.line): empty group") }
            out.append(Sample(file: file, label: Int(v), line: r.line, group: group))
        }
        return out
    }

    /// nil when `path` is a regular file (links followed), else the one-line error naming it.
    /// By stat(), never by opening: open() on a FIFO blocks until someone writes to it.
    static func regularFileProblem(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errnoText()
            var ln = stat()
            return "'\(oneLine(path))': \(e)" + (lstat(path, &ln) == 0 ? " (a broken link?)" : "")
        }
        guard let kind = nonRegularKind(st.st_mode) else { return nil }
        return "'\(oneLine(path))': not a regular file (\(kind))"
    }

    /// `s` for a one-line message: CR and LF (legal in file names and quoted CSV fields) shown as \r and \n,
    /// and every other line break a terminal honours (VT, FF, NEL, U+2028, U+2029) as \u{...}.
    static func oneLine(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { $0.properties.isPatternWhitespace && $0 != " " && $0 != "\t" }) else { return s }
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}": out += "\\u{\(String(u.value, radix: 16))}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// The class names of a data set whose labels are checked: below `declared`
    /// when given, else 0...K-1 with every class in train and K >= 2 (a typo
    /// `2` in a 0/1 CSV, or a one-class set, is an error unless declared).
    func checkClasses(_ splits: [(String, [Sample])], names: [String], declared: Int?) throws -> [String] {
        let all = splits.flatMap { split, samples in samples.map { (split, $0) } }
        func place(_ split: String, _ s: Sample) -> String { s.line > 0 ? "\(dir)/\(split).csv line \(s.line)" : "'\(s.file)'" }
        let maxLabel = all.map(\.1.label).max() ?? 0
        if let k = declared {
            if let (split, s) = all.first(where: { $0.1.label >= k }) {
                throw RuntimeError("\(place(split, s)): label \(s.label) is not below --classes \(k)")
            }
            return (0..<k).map { $0 < names.count ? names[$0] : "\($0)" }
        }
        let train = Set(splits.first { $0.0 == "train" }?.1.map(\.label) ?? [])
        if maxLabel == 0 && names.count <= 1 {
            throw RuntimeError("'\(dir)' has one class only (label 0): a classifier needs two; pass --classes 1 to prepare it anyway")
        }
        for k in 0...maxLabel where !train.contains(k) {
            let (split, s) = all.first { $0.1.label == maxLabel }!
            throw RuntimeError("class \(k) has no image in the train split while labels go up to \(maxLabel) (\(place(split, s))): "
                               + "a typo? Labels are 0...K-1 with every class in train; pass --classes K to prepare it anyway")
        }
        // Two labels whose files lie in the same class folder (NORMAL/ for 0 and for 2): one of them is a typo.
        for (b, name) in names.enumerated() where names.prefix(b).contains(name) && name != "\(b)" {
            let a = names.firstIndex(of: name)!
            let (split, s) = all.first { $0.1.label == b }!
            throw RuntimeError("labels \(a) and \(b) both name class '\(name)' (\(place(split, s)) has label \(b)): a typo? "
                               + "Pass --classes \(names.count) to prepare it anyway")
        }
        return names
    }

    /// FNV-1a over the listing and every file's size and mtime: changes when the source does.
    func fingerprint(_ listing: [(String, [Sample])], size: Int?, channels: Int?) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ s: String) { for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 } }
        mix("v1 size=\(size ?? 0) channels=\(channels ?? 0)")
        if case .medical(let m) = self { mix("window=\(m.window.argument)") }  // the same files windowed otherwise are other images
        for (split, samples) in listing {
            mix(split)
            for s in samples {
                mix(s.name); mix(String(s.label))
                if let a = try? FileManager.default.attributesOfItem(atPath: dir + "/" + s.file) {
                    mix(String((a[.size] as? Int) ?? 0)); mix(String(((a[.modificationDate] as? Date)?.timeIntervalSince1970) ?? 0))
                }
            }
        }
        return String(format: "%016llx", h)
    }

    /// Decodes, converts and writes the data set. Stops at the first bad image,
    /// named. `classes`: the number of classes when given; otherwise labels must
    /// be 0...K-1 with every class in the train split and K >= 2.
    @discardableResult
    public func prepare(out: String, size: Int? = nil, channels wantChannels: Int? = nil, classes: Int? = nil,
                        maxPixels: Int = RasterImage.defaultMaxPixels, regroup: GroupSplit? = nil,
                        groups: (path: String, of: [String: String])? = nil,
                        progress: ((Int, Int) -> Void)? = nil) throws -> String {
        if case .medical(var m) = self, m.maxPixels != maxPixels {
            // The DICOM/NIfTI readers take --max-pixels from the source: its listing reads headers too.
            m.maxPixels = maxPixels
            return try DatasetSource.medical(m).prepare(out: out, size: size, channels: wantChannels, classes: classes, maxPixels: maxPixels,
                                                        regroup: regroup, groups: groups, progress: progress)
        }
        var (splits, classNames) = try listing()
        if let groups { splits = try DatasetSource.assign(groups.of, from: groups.path, to: splits) }
        var regroup = regroup
        if case .medical = self, regroup == nil { regroup = .standard }  // always by patient
        // Every listed image pooled, then split again by group; the new splits go beside the data set for
        // review. They are staged in a temporary folder and swapped in only once the data set is written,
        // so a prepare that fails leaves the previous data set and its splits exactly as they were.
        var staged: GroupSplit.Staged? = nil
        defer { staged?.discard() }
        if let regroup {
            splits = try regroup.apply(splits.flatMap { $0.1 })
            staged = try GroupSplit.stage(splits, for: (out as NSString).deletingPathExtension + "-splits")
        }
        guard let train = splits.first(where: { $0.0 == "train" }), !train.1.isEmpty else {
            throw RuntimeError("'\(dir)': the train split is empty")
        }
        try checkFiles(splits)
        let all = splits.flatMap { $0.1 }
        let geometry = try geometry(all, size: size, channels: wantChannels, maxPixels: maxPixels)
        let bytes = try decode(all, to: geometry, resize: size != nil, maxPixels: maxPixels, progress: progress)
        let names = try checkClasses(splits, names: classNames, declared: classes)
        let (mean, std) = DatasetSource.channelStatistics(bytes, images: train.1.count, geometry)
        let fp = fingerprint(splits, size: size, channels: wantChannels)
        try write(out, splits: splits, images: bytes, geometry, classNames: names, mean: mean, std: std, fingerprint: fp)
        try staged?.commit()
        staged = nil
        return fp
    }

    /// Every listed image's group from a groups CSV (`prepare --groups`, written by `disttrain groups`), in place of
    /// any group the listing had; an image the CSV does not name is refused. Rows naming other files are ignored,
    /// so one groups CSV serves a subset too.
    static func assign(_ groups: [String: String], from path: String, to splits: [(String, [Sample])]) throws -> [(String, [Sample])] {
        try splits.map { name, samples in
            (name, try samples.map { s in
                guard let g = groups[s.name] else {
                    throw RuntimeError("\(path) names no group for '\(oneLine(s.name))' (listed in \(name))")
                }
                var s = s
                s.group = g
                return s
            })
        }
    }

    /// Channels, height and width of every image of a data set.
    struct Geometry {
        let channels: Int, height: Int, width: Int
        var pixels: Int { channels * height * width }
    }

    /// Every listed image exists, is a regular file and lies inside the data folder (links resolved).
    func checkFiles(_ splits: [(String, [Sample])]) throws {
        let fm = FileManager.default
        let root = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path + "/"
        for (split, samples) in splits { for s in samples {
            let at = s.line > 0 ? "\(dir)/\(split).csv line \(s.line): " : ""
            guard fm.fileExists(atPath: dir + "/" + s.file) else {
                throw RuntimeError(at + "image '\(DatasetSource.oneLine(s.file))' not found")
            }
            // Decoding opens the file: a FIFO would block there forever.
            if let problem = DatasetSource.regularFileProblem(dir + "/" + s.file) { throw RuntimeError(at + problem) }
            guard URL(fileURLWithPath: dir + "/" + s.file).resolvingSymlinksInPath().path.hasPrefix(root) else {
                throw RuntimeError(at + "image '\(s.file)' resolves outside the data folder '\(dir)'")
            }
        } }
    }

    /// The geometry given, or the first image's; refused when the decoded set would not fit in half the memory.
    func geometry(_ all: [Sample], size: Int?, channels: Int?, maxPixels: Int) throws -> Geometry {
        let first = try image(all[0], maxPixels: maxPixels)
        let g = Geometry(channels: channels ?? first.channels, height: size ?? first.height, width: size ?? first.width)
        let (total, overflow) = g.pixels.multipliedReportingOverflow(by: all.count)
        let budget = Int(ProcessInfo.processInfo.physicalMemory / 2)
        guard !overflow, total <= budget else {
            throw RuntimeError("\(all.count) images of \(g.channels)x\(g.height)x\(g.width) need more than half of this machine's memory; "
                               + "pass --image-size to resize them")
        }
        return g
    }

    /// Every image decoded on all cores into one [N, C, H, W] buffer, converted to the geometry's
    /// channels and, with `resize`, to its size (else an image of another size is an error).
    func decode(_ all: [Sample], to g: Geometry, resize: Bool, maxPixels: Int, progress: ((Int, Int) -> Void)?) throws -> [UInt8] {
        let per = g.pixels, C = g.channels, H = g.height, W = g.width
        var bytes = [UInt8](repeating: 0, count: per * all.count)
        var failure: String? = nil
        let lock = NSLock()
        var done = 0
        bytes.withUnsafeMutableBufferPointer { buf in
            let base = buf.baseAddress!
            DispatchQueue.concurrentPerform(iterations: max(1, ProcessInfo.processInfo.activeProcessorCount)) { t in
                let T = max(1, ProcessInfo.processInfo.activeProcessorCount)
                var i = t
                while i < all.count {
                    let s = all[i]
                    do {
                        var img = try image(s, maxPixels: maxPixels).converted(channels: C)
                        if img.width != W || img.height != H {
                            guard resize else {
                                throw RuntimeError("image '\(s.name)' is \(img.width)x\(img.height), the first was \(W)x\(H); "
                                                   + "pass --image-size to resize")
                            }
                            img = img.resized(width: W, height: H)
                        }
                        let chw = img.chw
                        chw.withUnsafeBufferPointer { (base + i * per).update(from: $0.baseAddress!, count: per) }
                    } catch {
                        lock.lock(); if failure == nil { failure = "\(error)" }; lock.unlock()
                        return
                    }
                    lock.lock(); done += 1; let d = done; lock.unlock()
                    if t == 0, let p = progress { p(d, all.count) }
                    i += T
                }
            }
        }
        if let f = failure { throw RuntimeError(f) }
        return bytes
    }

    /// Mean and standard deviation per channel, in [0, 1] units, of the first `images`
    /// images of `bytes` (the train split, which comes first).
    static func channelStatistics(_ bytes: [UInt8], images: Int, _ g: Geometry) -> (mean: [Double], std: [Double]) {
        let C = g.channels, HW = g.height * g.width, per = g.pixels
        var mean = [Double](repeating: 0, count: C), sq = [Double](repeating: 0, count: C)
        for i in 0..<images {
            for c in 0..<C {
                var s = 0.0, s2 = 0.0
                for p in 0..<HW { let v = Double(bytes[i * per + c * HW + p]) / 255; s += v; s2 += v * v }
                mean[c] += s; sq[c] += s2
            }
        }
        let n = Double(images * HW)
        let std = (0..<C).map { max(((sq[$0] / n) - (mean[$0] / n) * (mean[$0] / n)).squareRoot(), 1e-6) }
        return (mean.map { $0 / n }, std)
    }

    /// The data set file (written whole or not at all): images, labels, names, groups, splits as
    /// index ranges in listing order, class names, the train statistics and what it was made from.
    func write(_ out: String, splits: [(String, [Sample])], images bytes: [UInt8], _ g: Geometry, classNames: [String],
               mean: [Double], std: [Double], fingerprint: String) throws {
        let all = splits.flatMap { $0.1 }
        try durableHDF5(out) { f in
            try f.writeImages("images", shape: [all.count, g.channels, g.height, g.width], bytes: bytes)
            try f.write("labels", shape: [all.count], int64s: all.map { Int64($0.label) })
            try f.writeStrings("filenames", all.map(\.name))
            if all.contains(where: { $0.group != nil }) { try f.writeStrings("groups", all.map { $0.group ?? "" }) }
            var offset = 0
            for (name, samples) in splits {
                try f.write("split/" + name, shape: [samples.count], int64s: (offset..<(offset + samples.count)).map { Int64($0) },
                            chunked: !samples.isEmpty)
                offset += samples.count
            }
            try f.writeStrings("class_names", classNames)
            try f.write("mean", doubles: mean)
            try f.write("std", doubles: std)
            try f.setAttribute("format", "disttrain-dataset")
            try f.setAttribute("version", 1.0)
            try f.setAttribute("source", dir)
            try f.setAttribute("fingerprint", fingerprint)
            if case .medical(let m) = self { try f.setAttribute("window", m.window.argument) }
        }
    }
}
