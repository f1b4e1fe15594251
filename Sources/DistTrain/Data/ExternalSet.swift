import Foundation

/// Another data set for a trained run (`disttrain eval RUN --data SET`): its
/// images, with labels in the run's class indices, from one of
/// - DICOM series or NIfTI volumes with labels (labels.csv or class folders,
///   as `prepare` reads them), windowed as the run was;
/// - a `filename,label` CSV: the one CSV in SET, or SET itself when it is a
///   .csv file; paths relative to the CSV's folder; a label is a class index
///   or one of the run's class names; other columns are allowed, among them
///   `infection_mask` and `classes_mask` (lesion masks, for localisation);
/// - class folders, SET/<class>/*.png|jpg, named as the run's classes (any case).
/// Images may have any size and mode (gray, RGB, RGBA, palette; PNG or JPEG):
/// `prepare` brings them to the run's geometry as `predict` does.
public struct ExternalSet {
    public enum Form: String, Codable, Sendable { case medical = "DICOM/NIfTI", csv = "CSV", classFolders = "class folders" }

    public var form: Form
    /// What the images are read through; sample paths are relative to its folder.
    var source: DatasetSource
    public var samples: [Sample]
    /// Each sample's lesion masks, where the CSV has mask columns (else empty).
    public var masks: [LesionMasks]
    /// The run's class names, which the labels index.
    public var classNames: [String]
    /// The CSV the set was listed from (its name is what row errors cite).
    public var csv: String?

    public var dir: String { source.dir }

    /// Paths (relative to the set's folder) of one slice's masks: `infection` 0 background, any other value
    /// lesion; `classes` 0 background, 1 ground-glass opacity, 2 consolidation (MedSeg's).
    public struct LesionMasks: Sendable, Equatable {
        public var infection: String?, classes: String?
        public var isEmpty: Bool { infection == nil && classes == nil }
    }

    /// The index of class `name` among `classNames`, ignoring case.
    static func classIndex(_ name: String, in classNames: [String]) -> Int? {
        classNames.firstIndex { $0.lowercased() == name.lowercased() }
    }

    static func shownClasses(_ classNames: [String]) -> String { classNames.map { "'\($0)'" }.joined(separator: ", ") }

    /// The set at `path`, its form told by what it holds: DICOM/NIfTI files first (a study may carry
    /// labels.csv), then one CSV at the top level, then class folders.
    public static func open(_ path: String, classNames: [String], window: Window, maxPixels: Int = RasterImage.defaultMaxPixels) throws
        -> ExternalSet {
        let fm = FileManager.default, one = DatasetSource.oneLine
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw RuntimeError("--data '\(one(path))' does not exist") }
        if !isDir.boolValue {
            guard path.lowercased().hasSuffix(".csv") else {
                throw RuntimeError("--data '\(one(path))' is a file but not a .csv; give a CSV of filename,label rows, a folder of class "
                                   + "folders, or a DICOM/NIfTI study")
            }
            return try fromCSV(path, classNames: classNames)
        }
        if try MedicalSource.holdsMedicalImages(path) {
            return try medical(path, classNames: classNames, window: window, maxPixels: maxPixels)
        }
        let csvs = try fm.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") && $0.lowercased().hasSuffix(".csv") }.sorted()
        if csvs.count == 1 { return try fromCSV(path + "/" + csvs[0], classNames: classNames) }
        guard csvs.isEmpty else {
            throw RuntimeError("'\(one(path))' holds \(csvs.count) CSVs (\(csvs.map(one).joined(separator: ", "))): give the one to "
                               + "evaluate, e.g. --data '\(one(path))/\(one(csvs[0]))'")
        }
        return try fromClassFolders(path, classNames: classNames)
    }

    /// SET/<class>/<image>: every folder must be one of the run's classes.
    static func fromClassFolders(_ dir: String, classNames: [String]) throws -> ExternalSet {
        let fm = FileManager.default, one = DatasetSource.oneLine
        var samples: [Sample] = []
        for entry in try fm.contentsOfDirectory(atPath: dir).sorted() where !entry.hasPrefix(".") {
            var isDir: ObjCBool = false
            _ = fm.fileExists(atPath: dir + "/" + entry, isDirectory: &isDir)
            guard isDir.boolValue else {
                if DatasetSource.isImage(entry) {
                    throw RuntimeError("'\(one(dir))/\(one(entry))' is not in a class folder: put each image in \(one(dir))/<class>/")
                }
                continue
            }
            guard let k = classIndex(entry, in: classNames) else {
                throw RuntimeError("class folder '\(one(entry))' of '\(one(dir))' is not one of the run's classes \(shownClasses(classNames))")
            }
            for f in try fm.contentsOfDirectory(atPath: dir + "/" + entry).sorted() where !f.hasPrefix(".") && DatasetSource.isImage(f) {
                samples.append(Sample(file: entry + "/" + f, label: k, line: 0))
            }
        }
        guard !samples.isEmpty else {
            throw RuntimeError("'\(one(dir))' holds no DICOM/NIfTI files, no CSV and no class folders with PNG or JPEG images "
                               + "(\(dir)/<class>/*.png, classes \(shownClasses(classNames)))")
        }
        return ExternalSet(form: .classFolders, source: .folders(dir: dir), samples: samples, masks: samples.map { _ in LesionMasks() },
                           classNames: classNames)
    }

    /// A CSV with a header naming at least `filename` and `label` (any order, any case); the mask columns are optional.
    static func fromCSV(_ path: String, classNames: [String]) throws -> ExternalSet {
        let one = DatasetSource.oneLine
        let records = try CSV.read(path).filter { r in !r.fields.allSatisfy { $0.trimmingCharacters(in: .whitespaces).isEmpty } }
        func shown(_ r: CSV.Record) -> String { one(String(CSV.row(r.fields).dropLast())) }
        guard let head = records.first else { throw RuntimeError("\(path): empty; expected a header 'filename,label'") }
        let header = head.fields.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard let fileColumn = header.firstIndex(of: "filename"), let labelColumn = header.firstIndex(of: "label") else {
            throw RuntimeError("\(path) line \(head.line): expected a header with 'filename' and 'label' columns, got '\(shown(head))'")
        }
        let infectionColumn = header.firstIndex(of: "infection_mask"), classesColumn = header.firstIndex(of: "classes_mask")
        let dir = (path as NSString).deletingLastPathComponent
        /// A path of the CSV, relative to its folder and inside it.
        func relative(_ text: String, _ r: CSV.Record, _ what: String) throws -> String {
            guard !text.hasPrefix("/"), !text.split(separator: "/").contains("..") else {
                throw RuntimeError("\(path) line \(r.line): \(what) '\(one(text))' leaves the data folder (absolute or '..'); "
                                   + "paths are relative to the folder of the CSV")
            }
            return text
        }
        var samples: [Sample] = [], masks: [LesionMasks] = []
        for r in records.dropFirst() {
            let fields = r.fields.map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == header.count else {
                throw RuntimeError("\(path) line \(r.line): \(fields.count) fields for the header's \(header.count), got '\(shown(r))'")
            }
            let file = fields[fileColumn], text = fields[labelColumn]
            guard !file.isEmpty else { throw RuntimeError("\(path) line \(r.line): empty filename") }
            let index = Double(text).flatMap { v in v == v.rounded() && v >= 0 && v < Double(classNames.count) ? Int(v) : nil }
            guard let label = index ?? classIndex(text, in: classNames) else {
                throw RuntimeError("\(path) line \(r.line): label '\(one(text))' is neither a class index 0...\(classNames.count - 1) "
                                   + "nor one of the run's classes \(shownClasses(classNames))")
            }
            func mask(_ column: Int?, _ what: String) throws -> String? {
                guard let c = column, !fields[c].isEmpty else { return nil }
                return try relative(fields[c], r, what)
            }
            samples.append(Sample(file: try relative(file, r, "image path"), label: label, line: r.line))
            masks.append(LesionMasks(infection: try mask(infectionColumn, "infection_mask"), classes: try mask(classesColumn, "classes_mask")))
        }
        guard !samples.isEmpty else { throw RuntimeError("\(path): no rows below the header") }
        return ExternalSet(form: .csv, source: .csv(dir: dir.isEmpty ? "." : dir), samples: samples, masks: masks, classNames: classNames,
                           csv: path)
    }

    /// A DICOM/NIfTI study, listed by MedicalSource: labels.csv's class indices (a class name given
    /// there must be the run's), or class folders named as the run's classes.
    static func medical(_ dir: String, classNames: [String], window: Window, maxPixels: Int) throws -> ExternalSet {
        let one = DatasetSource.oneLine
        let labels = dir + "/labels.csv"
        let m = MedicalSource(dir: dir, labels: FileManager.default.fileExists(atPath: labels) ? labels : nil, window: window,
                              maxPixels: maxPixels)
        var (samples, names) = try m.listing()
        var toRun: [Int] = []
        for (k, name) in names.enumerated() {
            if m.labels != nil {
                guard k < classNames.count else {
                    throw RuntimeError("\(labels): label \(k) is not a class of the run (0...\(classNames.count - 1))")
                }
                guard name == "\(k)" || name.lowercased() == classNames[k].lowercased() else {
                    throw RuntimeError("\(labels): label \(k) is named '\(one(name))', the run's class \(k) is '\(classNames[k])'")
                }
                toRun.append(k)
            } else {
                guard let r = classIndex(name, in: classNames) else {
                    throw RuntimeError("class folder '\(one(name))' of '\(one(dir))' is not one of the run's classes \(shownClasses(classNames))")
                }
                toRun.append(r)
            }
        }
        for i in samples.indices { samples[i].label = toRun[samples[i].label] }
        return ExternalSet(form: .medical, source: .medical(m), samples: samples, masks: samples.map { _ in LesionMasks() },
                           classNames: classNames)
    }

    /// The channels a run's images are stored in: its data set's when it can be read, else its
    /// network's (a transfer run with conv1 replicated takes 1-channel slices into 3 channels).
    public static func channels(of cfg: TrainConfig) -> Int {
        if let ds = try? Dataset(path: cfg.dataset) { return ds.channels }
        return cfg.method == .transfer && cfg.adaptConv1 == .replicate ? 1 : cfg.inChannels
    }

    /// The set as a data set of one split, 'test', at `size` x `size` in `channels` (each image
    /// converted and resized as `Classifier.input` does for predict), labelled with the run's class
    /// names, in `out`; a file there made from the same listing, files, geometry and window is reused.
    /// Mask files are checked here too, before any image is decoded.
    public func prepare(out: String, size: Int, channels: Int, maxPixels: Int = RasterImage.defaultMaxPixels,
                        progress: ((Int, Int) -> Void)? = nil) throws -> (path: String, reused: Bool) {
        let fp = source.fingerprint([("external", samples)], size: size, channels: channels)
        if let ds = try? Dataset(path: out), ds.fingerprint == fp, ds.classNames == classNames, ds.count == samples.count {
            return (out, true)
        }
        // Rows are named by the CSV they came from: checkFiles cites "<dir>/<split>.csv line N".
        let stem = ((csv ?? "external") as NSString).lastPathComponent.replacingOccurrences(of: ".csv", with: "")
        var maskFiles: [Sample] = []
        for (s, m) in zip(samples, masks) {
            for f in [m.infection, m.classes].compactMap({ $0 }) { maskFiles.append(Sample(file: f, label: s.label, line: s.line)) }
        }
        try source.checkFiles([(stem, samples + maskFiles)])
        let g = try source.geometry(samples, size: size, channels: channels, maxPixels: maxPixels)
        let bytes = try source.decode(samples, to: g, resize: true, maxPixels: maxPixels, progress: progress)
        let (mean, std) = DatasetSource.channelStatistics(bytes, images: samples.count, g)
        try source.write(out, splits: [("test", samples)], images: bytes, g, classNames: classNames, mean: mean, std: std, fingerprint: fp)
        return (out, false)
    }

    /// Sample k's lesion masks at `size` x `size` (nearest neighbour, the geometry its image takes):
    /// "lesion" (the infection mask not 0, or without one the classes mask not 0), "ground-glass"
    /// (classes 1) and "consolidation" (classes 2); nil for a kind the sample has no mask for. A mask
    /// must have its image's width and height.
    func lesionMasks(_ k: Int, size: Int, maxPixels: Int = RasterImage.defaultMaxPixels) throws -> [String: [Bool]] {
        let m = masks[k]
        guard !m.isEmpty else { return [:] }
        let image = try source.image(samples[k], maxPixels: maxPixels)
        func read(_ file: String) throws -> [UInt8] {
            let mask = try RasterImage.read(dir + "/" + file, maxPixels: maxPixels)
            guard mask.width == image.width, mask.height == image.height else {
                throw RuntimeError("mask '\(DatasetSource.oneLine(dir + "/" + file))' is \(mask.width)x\(mask.height), its image "
                                   + "'\(DatasetSource.oneLine(samples[k].file))' \(image.width)x\(image.height): they must match")
            }
            // A colour mask is read as its first channel: luma would blend label values.
            let plane = mask.channels == 1 ? mask : RasterImage(width: mask.width, height: mask.height, channels: 1,
                                                                 pixels: stride(from: 0, to: mask.pixels.count, by: mask.channels).map { mask.pixels[$0] })
            return plane.resizedNearest(width: size, height: size).pixels
        }
        var out: [String: [Bool]] = [:]
        let classes = try m.classes.map(read)
        if let c = classes {
            out["ground-glass"] = c.map { $0 == 1 }
            out["consolidation"] = c.map { $0 == 2 }
        }
        if let inf = try m.infection.map(read) { out["lesion"] = inf.map { $0 != 0 } } else if let c = classes { out["lesion"] = c.map { $0 != 0 } }
        return out
    }
}
