import CMedical
import Foundation

/// One DICOM file read through DCMTK: its pixels in Hounsfield units (stored
/// value x RescaleSlope + RescaleIntercept; signed or unsigned, 8 to 16 bits;
/// every frame of a multi-frame file), and the identifiers a study is sorted by.
///
/// MONOCHROME1: HU-calibrated images (RescaleSlope/Intercept present) are
/// physical values and are not inverted; uncalibrated MONOCHROME1 images are
/// inverted over their stored range so that high is bright, and `inverted` says so.
public struct DicomFile: Sendable {
    public var rows = 0, cols = 0, frames = 0
    public var patientID = "", studyUID = "", seriesUID = "", sopUID = ""
    public var transferSyntax = "", photometric = "", modality = ""
    public var calibrated = false, inverted = false
    public var slope = 1.0, intercept = 0.0
    /// The file's own WindowCenter/WindowWidth (first values), when it has them.
    public var window: WindowLevel?
    public var position: [Double]?, orientation: [Double]?
    public var instanceNumber = 0
    /// frames x rows x cols, row-major; empty when read with `pixels: false`.
    public var values: [Float] = []

    /// Reads `path` (pixels: every frame decoded; else the header only). Rows,
    /// Columns and NumberOfFrames are checked against `maxPixels` (per frame) and
    /// `MedicalLimits` (in all), and against the bytes the file holds, before
    /// anything is allocated; a decoder's warning (corrupt compressed data) is an error.
    public static func read(_ path: String, pixels: Bool = true, maxPixels: Int = RasterImage.defaultMaxPixels) throws -> DicomFile {
        var d = dt_dicom()
        var err = [CChar](repeating: 0, count: 512)
        let rc = dt_dicom_read(path, pixels ? 1 : 0, MedicalLimits.of(maxPixels: maxPixels), &d, &err, Int32(err.count))
        defer { dt_dicom_free(&d) }
        guard rc == 0 else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        func s<T>(_ t: T) -> String { withUnsafeBytes(of: t) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) } }
        var f = DicomFile()
        f.rows = Int(d.rows); f.cols = Int(d.cols); f.frames = Int(d.frames)
        f.patientID = s(d.patient_id); f.studyUID = s(d.study_uid); f.seriesUID = s(d.series_uid); f.sopUID = s(d.sop_uid)
        f.transferSyntax = s(d.transfer_syntax); f.photometric = s(d.photometric); f.modality = s(d.modality)
        f.calibrated = d.calibrated != 0; f.inverted = d.inverted != 0
        f.slope = d.slope; f.intercept = d.intercept
        if d.has_window != 0 { f.window = WindowLevel(width: d.window_width, level: d.window_center) }
        if d.has_position != 0 { f.position = withUnsafeBytes(of: d.position) { Array($0.bindMemory(to: Double.self)) } }
        if d.has_orientation != 0 { f.orientation = withUnsafeBytes(of: d.orientation) { Array($0.bindMemory(to: Double.self)) } }
        f.instanceNumber = Int(d.instance_number)
        if pixels {
            // Converted straight into the array: the decoded pixels are not copied again.
            let n = f.frames * f.rows * f.cols
            f.values = try [Float](unsafeUninitializedCapacity: n) { buf, count in
                guard dt_dicom_values(&d, buf.baseAddress, Int64(n), &err, Int32(err.count)) == 0 else {
                    throw RuntimeError("'\(path)': \(String(cString: err))")
                }
                count = n
            }
        }
        return f
    }

    public func frame(_ k: Int) -> [Float] { Array(values[(k * rows * cols)..<((k + 1) * rows * cols)]) }

    /// Where the slice lies along its normal (row x column direction), for
    /// ordering a series; nil without ImagePositionPatient.
    public var slicePosition: Double? {
        guard let p = position else { return nil }
        guard let o = orientation, o.count == 6 else { return p[2] }
        let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]]
        return p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
    }

    /// A DICOM Part 10 file ("DICM" at byte 128) or a .dcm name. Only a regular
    /// file is opened to look (a FIFO would block the open); a .dcm name that is
    /// not one still counts, and the reader then refuses it, named.
    public static func looksLikeDICOM(_ path: String) -> Bool {
        if path.lowercased().hasSuffix(".dcm") { return true }
        guard DatasetSource.regularFileProblem(path) == nil, let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 132)) ?? Data()
        return head.count == 132 && head[128..<132].elementsEqual("DICM".utf8)
    }

    /// Writes one synthetic CT slice (HU, stored as signed 16 bit with intercept -1024).
    public static func writeCT(_ path: String, hu: [Float], size: Int, patientID: String, studyUID: String, seriesUID: String,
                               sopUID: String, instance: Int, z: Double, spacing: Double, window: WindowLevel) throws {
        let stored = hu.map { Int16(clamping: Int(($0 + 1024).rounded())) }
        var err = [CChar](repeating: 0, count: 512)
        guard dt_dicom_write_ct(path, stored, Int32(size), Int32(size), -1024, patientID, studyUID, seriesUID, sopUID, Int32(instance),
                                z, spacing, window.level, window.width, &err, Int32(err.count)) == 0 else {
            throw RuntimeError("'\(path)': \(String(cString: err))")
        }
    }
}

/// A NIfTI-1 volume (.nii, .nii.gz) through niftilib, scaled by scl_slope and
/// scl_inter; slices are taken across the axis nearest inferior-superior
/// (axial for the usual orientations; the third axis when there is no qform/sform).
public struct NiftiVolume: Sendable {
    public var dims: [Int]
    public var sliceAxis: Int
    public var slope: Double, intercept: Double
    public var values: [Float]

    /// Reads `path` (voxels: false: the header only, `values` empty). The header is
    /// checked first: 2-D or 3-D, `maxPixels` per slice and `MedicalLimits` in all
    /// (a .nii.gz is refused from its header, before inflating), and for an
    /// uncompressed file vox_offset + the voxel bytes inside the file; voxel data
    /// that end early (a short file or stream) are an error, never zero-filled.
    public static func read(_ path: String, maxPixels: Int = RasterImage.defaultMaxPixels, voxels: Bool = true) throws -> NiftiVolume {
        var v = dt_nifti()
        var err = [CChar](repeating: 0, count: 512)
        let rc = dt_nifti_read(path, MedicalLimits.of(maxPixels: maxPixels), &v, &err, Int32(err.count))
        defer { dt_nifti_free(&v) }
        guard rc == 0 else { throw RuntimeError("'\(path)': \(String(cString: err))") }
        let n = Int(v.nx) * Int(v.ny) * Int(v.nz)
        // Read and scaled straight into the array: the volume is held once.
        let values = voxels ? try [Float](unsafeUninitializedCapacity: n) { buf, count in
            guard dt_nifti_values(&v, buf.baseAddress, Int64(n), &err, Int32(err.count)) == 0 else {
                throw RuntimeError("'\(path)': \(String(cString: err))")
            }
            count = n
        } : []
        return NiftiVolume(dims: [Int(v.nx), Int(v.ny), Int(v.nz)], sliceAxis: Int(v.slice_axis), slope: v.slope, intercept: v.intercept,
                           values: values)
    }

    public var sliceCount: Int { dims[sliceAxis] }

    /// Slice k across `sliceAxis`: the other two axes, the lower one fastest.
    public func slice(_ k: Int) -> (width: Int, height: Int, values: [Float]) {
        let axes = [0, 1, 2].filter { $0 != sliceAxis }
        let (w, h) = (dims[axes[0]], dims[axes[1]])
        let stride = [1, dims[0], dims[0] * dims[1]]
        var out = [Float](repeating: 0, count: w * h)
        for y in 0..<h { for x in 0..<w {
            out[y * w + x] = values[k * stride[sliceAxis] + x * stride[axes[0]] + y * stride[axes[1]]]
        } }
        return (w, h, out)
    }

    public static func isNIfTI(_ path: String) -> Bool {
        let l = path.lowercased()
        return l.hasSuffix(".nii") || l.hasSuffix(".nii.gz")
    }

    /// Writes int16 voxels in HU (intercept -1024), i fastest, k inferior to superior.
    public static func write(_ path: String, hu: [Float], nx: Int, ny: Int, nz: Int, spacing: Double) throws {
        let stored = hu.map { Int16(clamping: Int(($0 + 1024).rounded())) }
        var err = [CChar](repeating: 0, count: 512)
        guard dt_nifti_write(path, stored, Int32(nx), Int32(ny), Int32(nz), -1024, spacing, &err, Int32(err.count)) == 0 else {
            throw RuntimeError("'\(path)': \(String(cString: err))")
        }
    }
}

/// What one DICOM or NIfTI file may hold, checked from its header: `--max-pixels`
/// per frame or slice, as for PNG/JPEG, and 4 x `--max-pixels` pixels in all (every
/// frame or slice), never less than 2^28 (1 GiB as float32: 1024 CT slices of
/// 512 x 512). The total is what a file may make this process hold (its values as
/// float32, up to four files in MedicalCache): a 3 KB DICOM can claim 2^31 - 1
/// frames and a 2 MB .nii.gz inflate to gigabytes.
enum MedicalLimits {
    static let minVoxels = 1 << 28

    static func of(maxPixels: Int) -> dt_limits {
        let (four, overflow) = maxPixels.multipliedReportingOverflow(by: 4)
        return dt_limits(max_pixels: Int64(maxPixels), max_voxels: Int64(max(overflow ? Int.max : four, minVoxels)))
    }
}

/// A display window in HU: width and level (centre).
public struct WindowLevel: Codable, Equatable, Sendable {
    public var width: Double, level: Double
    public init(width: Double, level: Double) { self.width = width; self.level = level }

    /// DICOM PS3.3 C.11.2.1.2.1 (linear VOI LUT) onto 0...255:
    /// x <= c - 0.5 - (w - 1) / 2 -> 0; x > c - 0.5 + (w - 1) / 2 -> 255;
    /// else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, rounded.
    public func apply(_ hu: [Float]) -> [UInt8] {
        let c = level, w = max(width, 1)
        let lo = c - 0.5 - (w - 1) / 2, hi = c - 0.5 + (w - 1) / 2
        return hu.map { v in
            let x = Double(v)
            if !(x > lo) { return 0 }
            if x > hi { return 255 }
            return UInt8(min(255, max(0, (((x - (c - 0.5)) / (w - 1) + 0.5) * 255).rounded())))
        }
    }
}

/// `--window`: lung (W 1500 / L -600), mediastinum (350 / 50), `W,L`, or file
/// (each file's own WindowCenter/WindowWidth).
public enum Window: Equatable, Sendable, CustomStringConvertible {
    case preset(String, WindowLevel)
    case file

    public static let lung = Window.preset("lung", WindowLevel(width: 1500, level: -600))
    public static let mediastinum = Window.preset("mediastinum", WindowLevel(width: 350, level: 50))

    public init?(argument: String) {
        switch argument.lowercased() {
        case "lung": self = .lung
        case "mediastinum": self = .mediastinum
        case "file": self = .file
        default:
            let parts = argument.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2, let w = parts[0], let l = parts[1], w.isFinite, l.isFinite, w >= 1 else { return nil }
            self = .preset("\(shortNumber(w)),\(shortNumber(l))", WindowLevel(width: w, level: l))
        }
    }

    public var description: String {
        switch self {
        case .file: return "file"
        case .preset(let name, let wl): return "\(name) (W \(shortNumber(wl.width)) / L \(shortNumber(wl.level)))"
        }
    }

    /// The argument that selects this window again (stored in data sets and configs).
    public var argument: String {
        switch self {
        case .file: return "file"
        case .preset(let name, let wl): return ["lung", "mediastinum"].contains(name) ? name : "\(shortNumber(wl.width)),\(shortNumber(wl.level))"
        }
    }

    /// The window for one file: the preset, or the file's own (an error naming the file when it has none).
    public func level(for file: String, own: WindowLevel?) throws -> WindowLevel {
        switch self {
        case .preset(_, let wl): return wl
        case .file:
            guard let own else { throw RuntimeError("'\(file)' has no WindowCenter/WindowWidth for --window file; choose lung, mediastinum or W,L") }
            return own
        }
    }
}

/// A number as short text: 1500, -600, 0.5.
func shortNumber(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v) }
