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

    public init(dir: String, labels: String? = nil, labelKey: LabelKey = .patient, window: Window = .lung, slices: Slices = .all) {
        self.dir = dir; self.labels = labels; self.labelKey = labelKey; self.window = window; self.slices = slices
    }

    /// Files under `dir` (relative paths, sorted), hidden ones and CSVs left out.
    static func files(_ dir: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let f = e.nextObject() as? String {
            let name = (f as NSString).lastPathComponent
            var isDir: ObjCBool = false
            guard !name.hasPrefix("."), FileManager.default.fileExists(atPath: dir + "/" + f, isDirectory: &isDir), !isDir.boolValue,
                  !name.lowercased().hasSuffix(".csv") else { continue }
            out.append(f)
        }
        return out.sorted()
    }

    /// Whether `dir` holds DICOM files or NIfTI volumes (and so is a source of this kind).
    public static func holdsMedicalImages(_ dir: String) -> Bool {
        files(dir).contains { NiftiVolume.isNIfTI($0) || DicomFile.looksLikeDICOM(dir + "/" + $0) }
    }

    /// One series or volume: its slices in order, as (file, frame) pairs.
    struct Series {
        var key: [LabelKey: String]
        var group: String
        var folderClass: String
        var slices: [(file: String, frame: Int?)]
        var name: String
        var isVolume = false
    }

    func series() throws -> [Series] {
        var dicom: [String: [(file: String, header: DicomFile)]] = [:], out: [Series] = []
        for f in MedicalSource.files(dir) {
            let classFolder = f.split(separator: "/").count > 1 ? String(f.split(separator: "/")[0]) : ""
            if NiftiVolume.isNIfTI(f) {
                let v = try NiftiVolume.read(dir + "/" + f)
                out.append(Series(key: [.volume: f, .patient: f, .study: f, .series: f], group: f, folderClass: classFolder,
                                  slices: (0..<v.sliceCount).map { (f, $0) }, name: f, isVolume: true))
            } else if DicomFile.looksLikeDICOM(dir + "/" + f) {
                let h = try DicomFile.read(dir + "/" + f, pixels: false)
                guard !h.seriesUID.isEmpty else { throw RuntimeError("'\(dir)/\(f)': no SeriesInstanceUID") }
                dicom[h.seriesUID, default: []].append((f, h))
            }
        }
        for (uid, members) in dicom.sorted(by: { $0.key < $1.key }) {
            let first = members[0].header
            guard !first.patientID.isEmpty else {
                throw RuntimeError("'\(dir)/\(members[0].file)': no PatientID (patient-level splits need one)")
            }
            if let other = members.first(where: { $0.header.patientID != first.patientID }) {
                throw RuntimeError("series \(uid) mixes patients '\(first.patientID)' and '\(other.header.patientID)' ('\(other.file)')")
            }
            let ordered = members.sorted {
                let a = ($0.header.slicePosition ?? 0, $0.header.instanceNumber, $0.file)
                let b = ($1.header.slicePosition ?? 0, $1.header.instanceNumber, $1.file)
                return a < b
            }
            let slices = ordered.flatMap { m in m.header.frames > 1 ? (0..<m.header.frames).map { (m.file, Optional($0)) } : [(m.file, nil)] }
            let classFolder = members[0].file.split(separator: "/").count > 1 ? String(members[0].file.split(separator: "/")[0]) : ""
            out.append(Series(key: [.patient: first.patientID, .study: first.studyUID, .series: uid, .volume: members[0].file],
                              group: first.patientID, folderClass: classFolder, slices: slices,
                              name: (members[0].file as NSString).deletingLastPathComponent))
        }
        return out
    }

    /// `key,label[,class]` with a header; labels are class indices.
    static func readLabels(_ path: String) throws -> (labels: [String: Int], names: [Int: String]) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw RuntimeError("cannot read '\(path)'") }
        var labels: [String: Int] = [:], names: [Int: String] = [:]
        for (i, raw) in text.split(whereSeparator: \.isNewline).enumerated() {
            let fields = raw.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")) }
            if i == 0 {
                guard fields.count >= 2, fields[1].lowercased() == "label" else {
                    throw RuntimeError("\(path) line 1: expected a header 'key,label' (e.g. PatientID,label[,class]), got '\(raw)'")
                }
                continue
            }
            guard fields.count >= 2, !fields[0].isEmpty, let k = Int(fields[1]), (0..<DatasetSource.maxClasses).contains(k) else {
                throw RuntimeError("\(path) line \(i + 1): expected 'key,label' with a class index, got '\(raw)'")
            }
            if let old = labels[fields[0]], old != k { throw RuntimeError("\(path) line \(i + 1): '\(fields[0])' is labelled \(old) and \(k)") }
            labels[fields[0]] = k
            if fields.count >= 3, !fields[2].isEmpty { names[k] = fields[2] }
        }
        return (labels, names)
    }

    /// The slices as samples (group = patient or volume), with the class names.
    func listing() throws -> (samples: [Sample], classNames: [String]) {
        let all = try series()
        guard !all.isEmpty else { throw RuntimeError("'\(dir)' holds no DICOM file or NIfTI volume") }
        var samples: [Sample] = [], classNames: [String]
        if let path = labels {
            let (table, names) = try MedicalSource.readLabels(path)
            for s in all {
                let key = s.key[s.isVolume ? .volume : labelKey] ?? ""
                guard let label = table[key] ?? table[(key as NSString).lastPathComponent] else {
                    throw RuntimeError("\(path): no label for \(labelKey.rawValue) '\(key)' (series '\(s.name)'); "
                                       + "key by --label-key patient, study, series or volume")
                }
                samples += slices.pick(s.slices.count).map { k in
                    Sample(file: s.slices[k].file, label: label, line: 0, group: s.group, frame: s.slices[k].frame)
                }
            }
            let top = (samples.map(\.label).max() ?? 0)
            classNames = (0...top).map { names[$0] ?? "\($0)" }
        } else {
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
        switch try MedicalCache.shared.load(path) {
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
    private let lock = NSLock()
    private var entries: [(path: String, entry: Entry)] = []

    func load(_ path: String) throws -> Entry {
        lock.lock()
        if let hit = entries.first(where: { $0.path == path }) { lock.unlock(); return hit.entry }
        lock.unlock()
        let e: Entry = NiftiVolume.isNIfTI(path) ? .nifti(try NiftiVolume.read(path)) : .dicom(try DicomFile.read(path))
        lock.lock(); defer { lock.unlock() }
        entries.append((path, e))
        if entries.count > 4 { entries.removeFirst() }
        return e
    }
}
