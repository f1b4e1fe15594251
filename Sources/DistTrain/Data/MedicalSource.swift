import Foundation

/// A folder of DICOM files (any nesting, any file names) or NIfTI volumes,
/// listed as slices for `prepare`: DICOM grouped into series by
/// SeriesInstanceUID and ordered by ImagePositionPatient along the slice
/// normal (then InstanceNumber); NIfTI sliced across its inferior-superior
/// axis. The group of a slice (what patient-level splits keep together) is
/// its PatientID, or the volume for NIfTI. Labels come from a CSV keyed by
/// PatientID, StudyInstanceUID, SeriesInstanceUID or volume file
/// (`key,label[,class]`), or from class folders (the first folder level).
public struct MedicalSource: Sendable {
    public enum LabelKey: String, CaseIterable, Sendable { case patient, study, series, volume }

    /// Which slices of each series or volume: every one, every k-th, or the central n.
    public enum Slices: Equatable, Sendable {
        case all, every(Int), central(Int)

        public init?(argument: String) {
            let parts = argument.lowercased().split(separator: ":").map(String.init)
            if parts == ["all"] { self = .all; return }
            guard parts.count == 2, let k = Int(parts[1]), k >= 1 else { return nil }
            switch parts[0] {
            case "every": self = .every(k)
            case "central": self = .central(k)
            default: return nil
            }
        }

        func pick(_ count: Int) -> [Int] {
            switch self {
            case .all: return Array(0..<count)
            case .every(let k): return Array(stride(from: 0, to: count, by: k))
            case .central(let n):
                let m = min(n, count), start = (count - m) / 2
                return Array(start..<(start + m))
            }
        }
    }

    public var dir: String
    public var labels: String?
    public var labelKey: LabelKey = .patient
    public var window: Window = .lung
    public var slices: Slices = .all
    /// `--max-pixels`, for the readers (headers while listing, pixels while reading).
    public var maxPixels = RasterImage.defaultMaxPixels

    public init(dir: String, labels: String? = nil, labelKey: LabelKey = .patient, window: Window = .lung, slices: Slices = .all,
                maxPixels: Int = RasterImage.defaultMaxPixels) {
        self.dir = dir; self.labels = labels; self.labelKey = labelKey; self.window = window; self.slices = slices
        self.maxPixels = maxPixels
    }

    /// Files under `dir` (relative paths, sorted), hidden ones and CSVs left out. Every other
    /// entry is a folder (walked) or must be a regular file: a FIFO would block the DICOM
    /// sniffer's open() forever and a device is no image, and leaving either out would hide
    /// input, so each is refused by name. Entries are stat()ed, never opened, to tell.
    static func files(_ dir: String) throws -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let f = e.nextObject() as? String {
            let name = (f as NSString).lastPathComponent
            var isDir: ObjCBool = false
            let folder = FileManager.default.fileExists(atPath: dir + "/" + f, isDirectory: &isDir) && isDir.boolValue
            if name.hasPrefix(".") {
                if folder { e.skipDescendants() }  // .git/ and the like: left out with everything in them
                continue
            }
            if folder { continue }
            if let problem = DatasetSource.regularFileProblem(dir + "/" + f) { throw RuntimeError(problem) }
            guard !name.lowercased().hasSuffix(".csv") else { continue }
            out.append(f)
        }
        return out.sorted()
    }

    /// Whether `dir` holds DICOM files or NIfTI volumes (and so is a source of this kind).
    public static func holdsMedicalImages(_ dir: String) throws -> Bool {
        try files(dir).contains { NiftiVolume.isNIfTI($0) || DicomFile.looksLikeDICOM(dir + "/" + $0) }
    }

    /// One series or volume: its slices in order, as (file, frame) pairs.
    struct Series {
        var key: [LabelKey: String]
        var group: String
        var folderClass: String
        var slices: [(file: String, frame: Int?)]
        var name: String
        var isVolume = false
        /// Every file of the series, copies left out of `slices` included (their class folders count too).
        var files: [String] = []
    }

    /// The class folder of a relative path: its first folder, "" at the top level.
    static func classFolder(_ file: String) -> String {
        let parts = file.split(separator: "/")
        return parts.count > 1 ? String(parts[0]) : ""
    }

    func series() throws -> [Series] {
        func at(_ f: String) -> String { "'\(DatasetSource.oneLine(dir + "/" + f))'" }  // a file of the folder, for one-line messages
        var dicom: [String: [(file: String, header: DicomFile)]] = [:], out: [Series] = []
        var holder: [String: String] = [:], copies: [String: [String]] = [:]  // SOPInstanceUID -> its file; series UID -> copies left out
        for f in try MedicalSource.files(dir) {
            let classFolder = MedicalSource.classFolder(f)
            if NiftiVolume.isNIfTI(f) {
                let v = try NiftiVolume.read(dir + "/" + f, maxPixels: maxPixels, voxels: false)
                out.append(Series(key: [.volume: f, .patient: f, .study: f, .series: f], group: f, folderClass: classFolder,
                                  slices: (0..<v.sliceCount).map { (f, $0) }, name: f, isVolume: true, files: [f]))
            } else if DicomFile.looksLikeDICOM(dir + "/" + f) {
                let h = try DicomFile.read(dir + "/" + f, pixels: false, maxPixels: maxPixels)
                guard !h.seriesUID.isEmpty else { throw RuntimeError("\(at(f)): no SeriesInstanceUID") }
                // One instance in two files. A byte-identical copy (a file copied twice into the
                // folder) adds nothing but would count its slice twice, so it is left out with a
                // note; two different files claiming one SOPInstanceUID mean one is mislabelled
                // or corrupt, and which one cannot be told here, so that is an error.
                if !h.sopUID.isEmpty, let first = holder[h.sopUID] {
                    guard FileManager.default.contentsEqual(atPath: dir + "/" + first, andPath: dir + "/" + f) else {
                        throw RuntimeError("\(at(f)): SOPInstanceUID \(DatasetSource.oneLine(h.sopUID)) is also that of "
                                           + "\(at(first)), a different file: one instance cannot have two contents; remove the wrong one")
                    }
                    FileHandle.standardError.write(Data(("note: \(at(f)) is a byte-identical copy of \(at(first)) "
                                                         + "(SOPInstanceUID \(DatasetSource.oneLine(h.sopUID))): left out\n").utf8))
                    copies[h.seriesUID, default: []].append(f)
                    continue
                }
                if !h.sopUID.isEmpty { holder[h.sopUID] = f }
                dicom[h.seriesUID, default: []].append((f, h))
            }
        }
        for (uid, members) in dicom.sorted(by: { $0.key < $1.key }) {
            let first = members[0].header
            guard !first.patientID.isEmpty else {
                throw RuntimeError("\(at(members[0].file)): no PatientID (patient-level splits need one)")
            }
            if let other = members.first(where: { $0.header.patientID != first.patientID }) {
                throw RuntimeError("series \(uid) mixes patients '\(first.patientID)' and '\(other.header.patientID)' ('\(other.file)')")
            }
            // Slices are ordered along the slice normal. NaN compares false with everything, so
            // one non-finite position would scramble the whole order (and what --slices
            // central:N picks); a file without a position would sort as 0 among the others.
            // Either is refused. A series without any position is ordered by InstanceNumber.
            for m in members {
                func shown(_ v: [Double]) -> String { v.map { "\($0)" }.joined(separator: "\\") }
                if let p = m.header.position, !p.allSatisfy(\.isFinite) {
                    throw RuntimeError("\(at(m.file)): ImagePositionPatient '\(shown(p))' is not finite; its series cannot be ordered")
                }
                if let o = m.header.orientation, !o.allSatisfy(\.isFinite) {
                    throw RuntimeError("\(at(m.file)): ImageOrientationPatient '\(shown(o))' is not finite; its series cannot be ordered")
                }
                if let z = m.header.slicePosition, !z.isFinite {
                    throw RuntimeError("\(at(m.file)): ImagePositionPatient '\(shown(m.header.position ?? []))' along ImageOrientationPatient "
                                       + "'\(shown(m.header.orientation ?? []))' overflows; its series cannot be ordered")
                }
            }
            if let placed = members.first(where: { $0.header.position != nil }),
               let unplaced = members.first(where: { $0.header.position == nil }) {
                throw RuntimeError("\(at(unplaced.file)): no usable ImagePositionPatient while \(at(placed.file)) of the same "
                                   + "series has one; its series cannot be ordered")
            }
            let ordered = members.sorted {
                let a = ($0.header.slicePosition ?? 0, $0.header.instanceNumber, $0.file)
                let b = ($1.header.slicePosition ?? 0, $1.header.instanceNumber, $1.file)
                return a < b
            }
            let slices = ordered.flatMap { m in m.header.frames > 1 ? (0..<m.header.frames).map { (m.file, Optional($0)) } : [(m.file, nil)] }
            out.append(Series(key: [.patient: first.patientID, .study: first.studyUID, .series: uid, .volume: members[0].file],
                              group: first.patientID, folderClass: MedicalSource.classFolder(members[0].file), slices: slices,
                              name: (members[0].file as NSString).deletingLastPathComponent,
                              files: members.map(\.file) + (copies[uid] ?? [])))
        }
        return out
    }

    /// `key,label[,class]` with a header; labels are class indices. Read as RFC 4180
    /// (CSV.parse), so a quoted key may hold commas, quotes and newlines.
    static func readLabels(_ path: String) throws -> (labels: [String: Int], names: [Int: String]) {
        if let problem = DatasetSource.regularFileProblem(path) { throw RuntimeError(problem) }
        let records = try CSV.read(path)
        func shown(_ r: CSV.Record) -> String { DatasetSource.oneLine(String(CSV.row(r.fields).dropLast())) }
        guard let header = records.first else {
            throw RuntimeError("\(path): empty; expected a header 'key,label' (e.g. PatientID,label[,class])")
        }
        guard header.fields.count >= 2, header.fields[1].trimmingCharacters(in: .whitespaces).lowercased() == "label" else {
            throw RuntimeError("\(path) line \(header.line): expected a header 'key,label' (e.g. PatientID,label[,class]), "
                               + "got '\(shown(header))'")
        }
        var labels: [String: (label: Int, line: Int)] = [:], names: [Int: (name: String, line: Int)] = [:]
        for r in records.dropFirst() {
            let fields = r.fields.map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count >= 2, !fields[0].isEmpty, let k = Int(fields[1]), (0..<DatasetSource.maxClasses).contains(k) else {
                throw RuntimeError("\(path) line \(r.line): expected 'key,label' with a class index, got '\(shown(r))'")
            }
            if let old = labels[fields[0]] {
                guard old.label == k else {
                    throw RuntimeError("\(path) line \(r.line): '\(DatasetSource.oneLine(fields[0]))' is labelled \(old.label) "
                                       + "on line \(old.line) and \(k) here")
                }
            } else { labels[fields[0]] = (k, r.line) }
            // A class has one name: 'covid' on one row and 'normal' on another is a typo on one of them.
            if fields.count >= 3, !fields[2].isEmpty {
                if let old = names[k] {
                    guard old.name == fields[2] else {
                        throw RuntimeError("\(path) lines \(old.line) and \(r.line): label \(k) is named '\(DatasetSource.oneLine(old.name))' "
                                           + "and '\(DatasetSource.oneLine(fields[2]))'; a class has one name")
                    }
                } else { names[k] = (fields[2], r.line) }
            }
        }
        return (labels.mapValues(\.label), names.mapValues(\.name))
    }

    /// The slices as samples (group = patient or volume), with the class names.
    func listing() throws -> (samples: [Sample], classNames: [String]) {
        let all = try series()
        guard !all.isEmpty else { throw RuntimeError("'\(dir)' holds no DICOM file or NIfTI volume") }
        var samples: [Sample] = [], classNames: [String]
        let one = DatasetSource.oneLine
        if let path = labels {
            let (table, names) = try MedicalSource.readLabels(path)
            // Keys match exactly: an unlisted PatientID 'ward9/P0001' is not 'P0001'. The one
            // exception is documented (README): a NIfTI volume may be keyed by its file name alone,
            // as synth writes them, when it lies in a subfolder; only while no other volume of the
            // folder has that name, or the key would label both.
            var volumesNamed: [String: [String]] = [:]
            for s in all where s.isVolume { volumesNamed[(s.name as NSString).lastPathComponent, default: []].append(s.name) }
            for s in all {
                let key = s.key[s.isVolume ? .volume : labelKey] ?? ""
                var found = table[key]
                if found == nil, s.isVolume, let k = table[(key as NSString).lastPathComponent] {
                    let name = (key as NSString).lastPathComponent, same = volumesNamed[name] ?? []
                    guard same.count == 1 else {
                        let list = same.map { "'\(one($0))'" }.joined(separator: ", ")
                        throw RuntimeError("\(path): '\(one(name))' names \(same.count) volumes (\(list)); key them by their path under '\(one(dir))'")
                    }
                    found = k
                }
                guard let label = found else {
                    throw RuntimeError("\(path): no label for \(s.isVolume ? "volume" : labelKey.rawValue) '\(one(key))' "
                                       + "(series '\(one(s.name))'); key by --label-key patient, study, series or volume")
                }
                samples += slices.pick(s.slices.count).map { k in
                    Sample(file: s.slices[k].file, label: label, line: 0, group: s.group, frame: s.slices[k].frame)
                }
            }
            let top = (samples.map(\.label).max() ?? 0)
            classNames = (0...top).map { names[$0] ?? "\($0)" }
        } else {
            // A series takes one label: one whose files lie in two class folders would silently take its first file's.
            for s in all {
                let folders = Set(s.files.map(MedicalSource.classFolder)).sorted()
                guard folders.count > 1 else { continue }
                func shown(_ folder: String) -> String {
                    let file = s.files.sorted().first { MedicalSource.classFolder($0) == folder } ?? ""
                    return (folder.isEmpty ? "the top level" : "'\(one(folder))'") + " ('\(one(dir + "/" + file))')"
                }
                throw RuntimeError("series \(s.key[.series] ?? "") has files in class folders \(shown(folders[0])) and \(shown(folders[1])); "
                                   + "a series takes one label: move it into one class folder or give --labels")
            }
            classNames = Set(all.map(\.folderClass)).sorted()
            guard !classNames.contains(""), classNames.count >= 1 else {
                throw RuntimeError("'\(dir)': give --labels FILE, or put the files in class folders (\(dir)/<class>/...)")
            }
            for s in all {
                let label = classNames.firstIndex(of: s.folderClass)!
                samples += slices.pick(s.slices.count).map { k in
                    Sample(file: s.slices[k].file, label: label, line: 0, group: s.group, frame: s.slices[k].frame)
                }
            }
        }
        return (samples, classNames)
    }

    /// One slice, windowed to 8 bits (1 channel); files are cached while their slices are read.
    func image(_ s: Sample) throws -> RasterImage {
        let path = dir + "/" + s.file
        switch try MedicalCache.shared.load(path, maxPixels: maxPixels) {
        case .dicom(let d):
            let k = s.frame ?? 0
            guard k < d.frames else { throw RuntimeError("'\(path)': frame \(k) of \(d.frames)") }
            let wl = try window.level(for: path, own: d.window)
            return RasterImage(width: d.cols, height: d.rows, channels: 1, pixels: wl.apply(d.frame(k)))
        case .nifti(let v):
            let k = s.frame ?? 0
            guard k < v.sliceCount else { throw RuntimeError("'\(path)': slice \(k) of \(v.sliceCount)") }
            let (w, h, values) = v.slice(k)
            return RasterImage(width: w, height: h, channels: 1, pixels: try window.level(for: path, own: nil).apply(values))
        }
    }
}

/// The last few decoded DICOM files and NIfTI volumes, shared by prepare's threads.
final class MedicalCache: @unchecked Sendable {
    enum Entry { case dicom(DicomFile), nifti(NiftiVolume) }
    static let shared = MedicalCache()
    private let cond = NSCondition()
    private var entries: [(key: String, entry: Entry)] = []
    /// Files being decoded now. prepare's threads take consecutive slices, so all of them ask for
    /// the same volume at once: one decodes it and the others wait for it, or memory would hold
    /// (threads + 4) copies of a volume of up to 2^28 voxels, each decoded once per thread.
    private var loading: Set<String> = []
    /// Decodes done (a test counts them).
    private(set) var decodes = 0

    func load(_ path: String, maxPixels: Int) throws -> Entry {
        let key = "\(maxPixels) \(path)"  // a file read under a larger limit is no answer for a smaller one
        cond.lock()
        while true {
            if let hit = entries.first(where: { $0.key == key }) { cond.unlock(); return hit.entry }
            if !loading.contains(key) { break }
            cond.wait()
        }
        loading.insert(key)
        decodes += 1
        cond.unlock()
        let result = Result { () throws -> Entry in
            NiftiVolume.isNIfTI(path) ? .nifti(try NiftiVolume.read(path, maxPixels: maxPixels)) : .dicom(try DicomFile.read(path, maxPixels: maxPixels))
        }
        cond.lock()
        loading.remove(key)
        if case .success(let e) = result {
            entries.append((key, e))
            if entries.count > 4 { entries.removeFirst() }
        }
        cond.broadcast()  // waiters take the entry, or decode themselves after a failure (and fail alike)
        cond.unlock()
        return try result.get()
    }
}
