import CMedical
import Foundation

/// A coded concept as DICOM writes it: code value, coding scheme designator, code meaning.
public struct DicomCode: Sendable, Equatable {
    public var value: String, scheme: String, meaning: String
    public init(_ value: String, _ scheme: String, _ meaning: String) { self.value = value; self.scheme = scheme; self.meaning = meaning }

    /// SNOMED CT 840539006 "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)", preferred term COVID-19.
    public static let covid19 = DicomCode("840539006", "SCT", "COVID-19")

    /// What a run's positive class is found as: COVID-19 (SNOMED CT) for a class named
    /// like it, else the class name as a local code (scheme "99DISTTRAIN": DICOM PS3.16
    /// 8.2 reserves "99" prefixes for private schemes; a code value is at most 16 characters).
    public static func finding(forClass name: String) -> DicomCode {
        if name.lowercased().contains("covid") { return .covid19 }
        let value = String(name.uppercased().unicodeScalars.filter { ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
            .map(Character.init).prefix(16))
        let meaning = String(name.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F && $0 != "\\" }.map(Character.init).prefix(64))
        return DicomCode(value.isEmpty ? "POSITIVE" : value, "99DISTTRAIN", meaning.isEmpty ? "positive class" : meaning)
    }
}

/// One DICOM series as predict (or `serve`) has it, ready for `DicomResults.write`:
/// its slices in series order, each a source DICOM file (and frame), the slice's
/// probability of the positive class, and its CAM overlay (RGB) when there is one.
public struct DicomSeriesResult: Sendable {
    public struct Slice: Sendable {
        public var path: String
        /// The frame of a multi-frame file (0-based, as predict counts them); nil for a single-frame file.
        public var frame: Int?
        public var probability: Double
        /// The CAM over the slice, 3 channels; nil writes no Secondary Capture image for the slice.
        public var overlay: RasterImage?
        public init(path: String, frame: Int? = nil, probability: Double, overlay: RasterImage? = nil) {
            self.path = path; self.frame = frame; self.probability = probability; self.overlay = overlay
        }
    }
    public var slices: [Slice]
    /// The CAM method the overlays show ("gradcam"), for their DerivationDescription.
    public var overlayMethod: String?
    public init(slices: [Slice], overlayMethod: String? = nil) { self.slices = slices; self.overlayMethod = overlayMethod }

    /// The series' probability: the mean of its slices', as predict's series.csv has it.
    public var probability: Double { slices.map(\.probability).reduce(0, +) / Double(max(slices.count, 1)) }
}

/// What made the results, the same for every series of a run: the model, its
/// checkpoint's SHA-256 (Algorithm Version, and the Device Observer UID is derived
/// from it), the decision rule, the preprocessing, and the UID root for new objects.
public struct DicomResultDevice: Sendable {
    public var algorithmName: String
    public var modelName: String
    public var checkpointSHA256: String
    public var parameters: String
    public var finding: DicomCode
    /// Root of the UIDs written (digits and dots, at most 24 characters); nil: DCMTK's.
    public var uidRoot: String?
    public var manufacturer = "disttrain"
    public var softwareVersions = "disttrain (checkpoint format \(shortNumber(Checkpoint.formatVersion)))"
    public var srSeriesNumber = 9901, scSeriesNumber = 9902

    /// The device of a run folder's checkpoint as predict uses it (`window`: the --window argument
    /// the slices were windowed with, when not the run's).
    public init(config: TrainConfig, checkpoint: String, tta: TestTimeAugmentation, window: String? = nil, uidRoot: String?) throws {
        let positive = config.classNames.last ?? "1"
        let arch = config.arch.rawValue
        algorithmName = "disttrain \(arch) \(positive) classifier"
        modelName = "\(arch) width \(config.width), \(config.imageSize) px"
        checkpointSHA256 = try DicomResults.sha256(file: checkpoint)
        finding = DicomCode.finding(forClass: positive)
        self.uidRoot = uidRoot
        parameters = "checkpoint \((checkpoint as NSString).lastPathComponent) sha256:\(checkpointSHA256); positive class '\(positive)'; "
            + "decision p > \(Classifier.threshold); series p = mean of its slices' p; window \(window ?? config.window ?? "none"); tta \(tta.rawValue); "
            + "input \(config.imageSize) px"
    }

    /// 2.25 followed by the decimal value of a UUID (PS3.5 B.2) made from the
    /// checkpoint's SHA-256: its first 128 bits with the version nibble set to 8
    /// and the variant to RFC 9562's (a custom, name-based UUID). The same
    /// checkpoint is always the same device.
    public var deviceUID: String {
        let hex = Array(checkpointSHA256.prefix(32))
        var bytes = stride(from: 0, to: 32, by: 2).map { UInt8(String(hex[$0...$0 + 1]), radix: 16) ?? 0 }
        bytes[6] = (bytes[6] & 0x0F) | 0x80
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        // The 128-bit integer in decimal: repeated division of the big-endian bytes by 10.
        var digits: [Character] = []
        while bytes.contains(where: { $0 != 0 }) {
            var rem = 0
            for i in bytes.indices {
                let v = rem * 256 + Int(bytes[i])
                bytes[i] = UInt8(v / 10); rem = v % 10
            }
            digits.append(Character(String(rem)))
        }
        return "2.25." + (digits.isEmpty ? "0" : String(digits.reversed()))
    }
}

/// DICOM results for a PACS (issue 29): per series, a Comprehensive SR document
/// and an RGB Secondary Capture image per slice, in the source study (same
/// StudyInstanceUID, patient and study modules), each in a new series, built by
/// DCMTK (dcmsr, dcmdata). The SR's content tree is described in
/// Sources/CMedical/dicom_write.cpp.
public enum DicomResults {
    /// Writes `series` into `dir` (created if missing): `sr.dcm` and `sc-0001.dcm`,
    /// `sc-0002.dcm`, ... (one per slice with an overlay, numbered by slice), each
    /// whole or absent (durableWrite). File names never come from the data. Returns
    /// the paths written, the SR first. Errors name the file.
    @discardableResult
    public static func write(_ series: DicomSeriesResult, device: DicomResultDevice, into dir: String) throws -> [String] {
        guard !series.slices.isEmpty else { throw RuntimeError("'\(dir)': a DICOM result needs at least one slice") }
        if let bad = series.slices.first(where: { !$0.probability.isFinite || !(0...1).contains($0.probability) }) {
            throw RuntimeError("'\(bad.path)': probability \(bad.probability) is not in [0, 1]")
        }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw RuntimeError("cannot create '\(dir)': \(error.localizedDescription)")
        }
        let keep = CStrings()
        defer { withExtendedLifetime(keep) {} }  // info and slices point into it until the last write
        let p = series.probability
        let method = series.overlayMethod ?? "CAM"
        var info = dt_result_info()
        info.uid_root = device.uidRoot.map(keep.add)
        info.manufacturer = keep.add(lo(device.manufacturer))
        info.model_name = keep.add(lo(device.modelName))
        info.software_versions = keep.add(lo(device.softwareVersions))
        info.device_uid = keep.add(device.deviceUID)
        info.algorithm_name = keep.add(text(device.algorithmName))
        info.algorithm_version = keep.add("sha256:" + device.checkpointSHA256)
        info.algorithm_parameters = keep.add(text(device.parameters))
        info.finding_value = keep.add(device.finding.value)
        info.finding_scheme = keep.add(device.finding.scheme)
        info.finding_meaning = keep.add(device.finding.meaning)
        info.probability = p
        info.positive = Classifier.decide(score: p) == 1 ? 1 : 0  // the one decision rule (series.csv's)
        info.sr_series_number = Int32(device.srSeriesNumber)
        info.sc_series_number = Int32(device.scSeriesNumber)
        info.sr_series_description = keep.add(lo("\(device.finding.meaning) probability (disttrain)"))
        info.sc_series_description = keep.add(lo("\(device.finding.meaning) \(method) overlay (disttrain)"))
        // ST: at most 1024 characters.
        info.derivation_description = keep.add(String(text("\(method) class activation map (jet, alpha 0.45) over the windowed slice, "
                                                           + "\(device.modelName); not for primary diagnosis").prefix(1024)))
        let slices = series.slices.map { s in
            dt_result_slice(path: keep.add(s.path), frame: Int32((s.frame ?? -1) + 1), probability: s.probability)
        }
        var err = [CChar](repeating: 0, count: 512)
        func newUID() throws -> String {
            var out = [CChar](repeating: 0, count: 65)
            guard dt_new_uid(info.uid_root, &out, &err, Int32(err.count)) == 0 else { throw RuntimeError("--uid-root: \(String(cString: err))") }
            return String(cString: out)
        }
        let srSeries = try newUID(), scSeries = try newUID()
        var written: [String] = []
        let sr = dir + "/sr.dcm"
        try durableWrite(sr) { tmp in
            guard dt_write_sr(tmp, &info, slices, Int32(slices.count), srSeries, &err, Int32(err.count)) == 0 else {
                throw RuntimeError("'\(sr)': \(String(cString: err))")
            }
        }
        written.append(sr)
        for (k, s) in series.slices.enumerated() {
            guard let o = s.overlay else { continue }
            guard o.channels == 3 else { throw RuntimeError("'\(s.path)': its overlay has \(o.channels) channels, not 3 (RGB)") }
            let path = dir + String(format: "/sc-%04d.dcm", k + 1)
            try durableWrite(path) { tmp in
                var source = slices[k]
                guard dt_write_sc(tmp, &info, &source, o.pixels, Int32(o.height), Int32(o.width), scSeries, Int32(k + 1), &err,
                                  Int32(err.count)) == 0 else {
                    throw RuntimeError("'\(path)': \(String(cString: err))")
                }
            }
            written.append(path)
        }
        return written
    }

    /// Text for a DICOM value: printable ASCII, no backslash (the value separator).
    static func text(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F && $0 != "\\" }.map(Character.init))
    }

    /// A Long String (LO) value: `text`, at most 64 characters.
    static func lo(_ s: String) -> String { String(text(s).prefix(64)) }

    /// SHA-256 of a file, 64 lowercase hex digits.
    public static func sha256(file path: String) throws -> String {
        var hex = [CChar](repeating: 0, count: 65), err = [CChar](repeating: 0, count: 512)
        guard dt_sha256_file(path, &hex, &err, Int32(err.count)) == 0 else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        return String(cString: hex)
    }

    /// The value of one element of a DICOM file by DCMTK path ("PatientName",
    /// "SourceImageSequence[0].ReferencedSOPInstanceUID"), values joined by "\".
    public static func value(_ path: String, _ tagPath: String) throws -> String {
        var out = [CChar](repeating: 0, count: 4096), err = [CChar](repeating: 0, count: 512)
        guard dt_dicom_get(path, tagPath, &out, Int32(out.count), &err, Int32(err.count)) == 0 else {
            throw RuntimeError("'\(path)': \(String(cString: err))")
        }
        return String(cString: out)
    }

    /// The 8-bit pixel bytes of a file (a Secondary Capture image: RGB, interleaved), without a padding byte.
    public static func pixels(_ path: String) throws -> [UInt8] {
        var err = [CChar](repeating: 0, count: 512), n: Int64 = 0
        guard dt_dicom_pixels8_count(path, &n, &err, Int32(err.count)) == 0 else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        let rows = Int(try value(path, "Rows")) ?? 0, cols = Int(try value(path, "Columns")) ?? 0
        let spp = Int(try value(path, "SamplesPerPixel")) ?? 1
        let count = min(Int(n), rows * cols * spp)
        var out = [UInt8](repeating: 0, count: count)
        guard dt_dicom_pixels8(path, &out, Int64(count), &err, Int32(err.count)) == 0 else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        return out
    }

    /// An SR document read back through dcmsr (the tests' and checks' view of it).
    public struct SRContent: Sendable {
        public struct Item: Sendable {
            public var kind: String, concept: String, values: [String]
        }
        public var study = "", series = "", sopClass = "", sop = ""
        /// Content items in document order (depth first): kind ("container", "num", "code",
        /// "text", "uidref", "image"), concept code value, and the values.
        public var items: [Item] = []
        /// (study, series, SOP class, SOP instance) of each evidence reference.
        public var evidence: [[String]] = []

        /// Each NUM item (value) with the IMAGE it is inferred from (the next image item
        /// before the next NUM), as (value, SOP class, SOP instance, frame: 0 when none).
        public var numbers: [(value: Double, image: [String]?)] {
            var out: [(value: Double, image: [String]?)] = []
            for it in items {
                if it.kind == "num" { out.append((Double(it.values.first ?? "") ?? .nan, nil)) }
                if it.kind == "image", !out.isEmpty, out[out.count - 1].image == nil { out[out.count - 1].image = it.values }
            }
            return out
        }
    }

    public static func readSR(_ path: String) throws -> SRContent {
        var text: UnsafeMutablePointer<CChar>? = nil
        var err = [CChar](repeating: 0, count: 512)
        guard dt_read_sr(path, &text, &err, Int32(err.count)) == 0, let text else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        defer { dt_free(text) }
        var c = SRContent()
        for line in String(cString: text).split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard let kind = f.first else { continue }
            let rest = Array(f.dropFirst())
            switch kind {
            case "study": c.study = rest.first ?? ""
            case "series": c.series = rest.first ?? ""
            case "sopclass": c.sopClass = rest.first ?? ""
            case "sop": c.sop = rest.first ?? ""
            case "evidence": c.evidence.append(rest)
            default: c.items.append(SRContent.Item(kind: kind, concept: rest.first ?? "", values: Array(rest.dropFirst())))
            }
        }
        return c
    }
}

/// C strings that live as long as this object (for the C structs' pointers).
final class CStrings {
    private var held: [UnsafeMutablePointer<CChar>] = []
    func add(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        held.append(p)
        return UnsafePointer(p)
    }
    deinit { held.forEach { free($0) } }
}
