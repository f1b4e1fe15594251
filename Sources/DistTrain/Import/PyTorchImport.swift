import Foundation
import Net

// Reading PyTorch weights without Python: the zip format of torch.save
// (`archive/data.pkl` + `archive/data/<key>` storages) and .safetensors.
//
// The pickle reader implements only what a state_dict needs. It never runs
// anything: GLOBAL/STACK_GLOBAL names are checked against an allowlist of
// torch's tensor-rebuild functions and storage types the moment they are
// read, and anything else (os.system, builtins.eval, ...) stops the import.

public struct ImportedTensor {
    public var shape: [Int]
    public var values: [Float]
    /// As safetensors names it: F32, F16, BF16, F64, I64, ...
    public var dtype: String

    public init(shape: [Int], values: [Float], dtype: String) {
        self.shape = shape; self.values = values; self.dtype = dtype
    }
}

public enum PyTorchImport {
    /// name -> tensor, from a .pth/.pt (zip) or .safetensors file.
    public static func read(_ path: String) throws -> [String: ImportedTensor] {
        guard let data = FileManager.default.contents(atPath: path) else { throw RuntimeError("cannot read '\(path)'") }
        if path.hasSuffix(".safetensors") { return try readSafetensors(data, path: path) }
        if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return try readTorchZip(data, path: path) }
        if data.count > 8, data[8...].starts(with: Array("{\"".utf8)) || data.count > 8 && data[8] == UInt8(ascii: "{") {
            return try readSafetensors(data, path: path)
        }
        throw RuntimeError("'\(path)' is neither a torch.save zip archive nor .safetensors "
                           + "(the legacy pre-1.6 format is not read: re-save it with torch >= 1.6)")
    }

    // MARK: limits

    /// One tensor holds at most this many elements.
    static let maxTensorElements = 1 << 31

    /// Bytes per element of the dtypes read.
    static func elementSize(_ dtype: String, name: String, path: String) throws -> Int {
        switch dtype {
        case "F32", "I32": return 4
        case "F16", "BF16": return 2
        case "F64", "I64": return 8
        case "U8", "BOOL": return 1
        default: throw RuntimeError("'\(path)': '\(name)' has dtype \(dtype), which is not imported")
        }
    }

    /// The element count of a declared shape: every extent >= 0, no overflow,
    /// at most maxTensorElements.
    static func elementCount(_ shape: [Int], name: String, path: String) throws -> Int {
        var n = 1
        for d in shape {
            let (m, overflow) = n.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, m <= maxTensorElements else {
                throw RuntimeError("'\(path)': '\(name)' declares shape \(shape) "
                                   + "(negative, overflowing or over \(maxTensorElements) elements)")
            }
            n = m
        }
        return n
    }

    /// All tensors of a file together declare at most about one element per
    /// byte of the file: a stride-0 view may not turn a small file into gigabytes.
    static func checkDeclaredTotal(_ counts: [Int], fileBytes: Int, path: String) throws {
        var total = 0
        for c in counts {
            let (t, overflow) = total.addingReportingOverflow(c)
            guard !overflow else { total = Int.max; break }
            total = t
        }
        guard total <= fileBytes + 65_536 else {
            throw RuntimeError("'\(path)': its tensors declare \(total) elements in a file of \(fileBytes) bytes "
                               + "(stride-0 expansion or a damaged header); refused")
        }
    }

    // MARK: safetensors

    /// The format (huggingface/safetensors): 8 bytes little-endian header size
    /// N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}},
    /// then the byte buffer, which the tensors cover exactly: no holes, no overlaps.
    static func readSafetensors(_ data: Data, path: String) throws -> [String: ImportedTensor] {
        guard data.count >= 8 else { throw RuntimeError("'\(path)' is truncated") }
        let declared = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }.littleEndian
        guard declared > 0, declared <= UInt64(data.count - 8), declared <= 100_000_000 else {
            throw RuntimeError("'\(path)': safetensors header of \(declared) bytes does not fit the file of \(data.count) bytes")
        }
        let n = Int(declared)
        let start = data.startIndex
        guard let header = try? JSONSerialization.jsonObject(with: data[(start + 8)..<(start + 8 + n)]) as? [String: Any] else {
            throw RuntimeError("'\(path)': bad safetensors header (not a JSON object)")
        }
        let bufferSize = data.count - 8 - n
        var entries: [(name: String, dtype: String, shape: [Int], lo: Int, hi: Int)] = []
        for (name, v) in header where name != "__metadata__" {
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                  let off = d["data_offsets"] as? [Int], off.count == 2 else { throw RuntimeError("'\(path)': bad entry '\(name)'") }
            guard off[0] >= 0, off[0] <= off[1], off[1] <= bufferSize else {
                throw RuntimeError("'\(path)': '\(name)' has data_offsets \(off) outside the buffer of \(bufferSize) bytes")
            }
            let count = try elementCount(shape, name: name, path: path)
            let size = try elementSize(dtype, name: name, path: path)
            guard off[1] - off[0] == count * size else {
                throw RuntimeError("'\(path)': '\(name)' has \(off[1] - off[0]) bytes for \(count) \(dtype) elements")
            }
            entries.append((name, dtype, shape, off[0], off[1]))
        }
        var end = 0
        for e in entries.sorted(by: { ($0.lo, $0.hi) < ($1.lo, $1.hi) }) {
            guard e.lo == end else {
                throw RuntimeError("'\(path)': '\(e.name)' starts at byte \(e.lo) of the buffer, not \(end): "
                                   + (e.lo < end ? "tensors overlap" : "the buffer has a hole"))
            }
            end = e.hi
        }
        guard end == bufferSize else { throw RuntimeError("'\(path)': \(bufferSize - end) bytes after the last tensor") }
        var out: [String: ImportedTensor] = [:]
        for e in entries {
            let count = e.shape.reduce(1, *)
            let values = try decode(data, range: (8 + n + e.lo)..<(8 + n + e.hi), dtype: e.dtype, count: count, name: e.name, path: path)
            out[e.name] = ImportedTensor(shape: e.shape, values: values, dtype: e.dtype)
        }
        return out
    }

    /// Little-endian elements to Float: F32, F16, BF16, F64, I64, I32, U8, BOOL.
    /// `range` is relative to the start of `data`; a strided view (torch) is
    /// checked against its storage before anything is allocated.
    static func decode(_ data: Data, range: Range<Int>, dtype: String, count: Int, name: String, path: String,
                       strided: (offset: Int, shape: [Int], stride: [Int])? = nil) throws -> [Float] {
        let size = try elementSize(dtype, name: name, path: path)
        let avail = range.count / size
        // Element indices in storage: contiguous, or from (offset, shape, stride).
        var index: (Int) -> Int = { $0 }
        if let s = strided {
            let shape = s.shape, stride = s.stride, off = s.offset
            guard shape.count == stride.count, off >= 0, stride.allSatisfy({ $0 >= 0 }) else {
                throw RuntimeError("'\(path)': '\(name)' has a bad view (offset \(off), shape \(shape), stride \(stride))")
            }
            if count > 0 {
                // The largest storage index the view touches, with non-trapping arithmetic.
                var last = off, overflow = false
                for (d, st) in zip(shape, stride) {
                    let (m, o1) = (d - 1).multipliedReportingOverflow(by: st)
                    let (t, o2) = last.addingReportingOverflow(m)
                    overflow = overflow || o1 || o2
                    last = t
                }
                guard !overflow, last < avail else { throw RuntimeError("'\(path)': '\(name)' reads past its storage") }
            }
            index = { i in
                var rem = i, e = off
                for d in stride.indices.reversed() { e += (rem % max(shape[d], 1)) * stride[d]; rem /= max(shape[d], 1) }
                return e
            }
        } else {
            guard count <= avail else { throw RuntimeError("'\(path)': '\(name)' reads past its storage") }
        }
        guard range.lowerBound >= 0, range.upperBound <= data.count else {
            throw RuntimeError("'\(path)': '\(name)' points outside the file")
        }
        var out = [Float](repeating: 0, count: count)
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + range.lowerBound
            for i in 0..<count {
                let p = base + index(i) * size  // inside the storage: checked above for the whole view
                switch dtype {
                case "F32": out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
                case "F16": out[i] = halfToFloat(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
                case "BF16": out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self))) << 16)
                case "F64": out[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))))
                case "I64": out[i] = Float(Int64(littleEndian: p.loadUnaligned(as: Int64.self)))
                case "I32": out[i] = Float(Int32(littleEndian: p.loadUnaligned(as: Int32.self)))
                default: out[i] = Float(p.load(as: UInt8.self))
                }
            }
        }
        return out
    }

    /// IEEE half to single, exactly (subnormals, infinities, NaN included).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31, exp = Int((h >> 10) & 0x1F), man = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(man) * 0x1p-24
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (man << 13)) }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (man << 13))
    }

    // MARK: torch.save zip

    static func readTorchZip(_ data: Data, path: String) throws -> [String: ImportedTensor] {
        let entries = try ZipReader.entries(data, path: path)
        guard let pkl = entries.keys.first(where: { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }) else {
            throw RuntimeError("'\(path)': no data.pkl in the archive (not a torch.save file)")
        }
        let prefix = String(pkl.dropLast("data.pkl".count))
        var reader = PickleReader(data[entries[pkl]!], path: path)
        let value = try reader.load()
        // Unwrap {"state_dict": ...} / {"model": ...}.
        let dict = try stateDict(value, path: path)
        let tensors = dict.compactMap { k, v -> (String, TensorRef)? in if case .tensor(let t) = v { return (k, t) }; return nil }
        let counts = try tensors.map { k, t in try elementCount(t.shape, name: k, path: path) }
        try checkDeclaredTotal(counts, fileBytes: data.count, path: path)
        var out: [String: ImportedTensor] = [:]
        for ((k, t), count) in zip(tensors, counts) {
            guard let range = entries[prefix + "data/" + t.key] else {
                throw RuntimeError("'\(path)': storage '\(t.key)' of '\(k)' is missing")
            }
            let values = try decode(data, range: range, dtype: t.dtype, count: count, name: k, path: path,
                                    strided: (t.offset, t.shape, t.stride))
            out[k] = ImportedTensor(shape: t.shape, values: values, dtype: t.dtype)
        }
        return out
    }

    static func stateDict(_ v: PickleValue, path: String, level: Int = 0) throws -> [(String, PickleValue)] {
        guard case .dict(let d) = v else { throw RuntimeError("'\(path)': the pickle holds no dictionary of tensors") }
        guard level < 4 else { throw RuntimeError("'\(path)': state_dict wrappers nest more than 4 deep (a self-referencing dict?)") }
        let pairs: [(String, PickleValue)] = d.items.compactMap { k, v in if case .string(let s) = k { return (s, v) }; return nil }
        for wrapper in ["state_dict", "model", "model_state_dict", "module"] {
            if let inner = pairs.first(where: { $0.0 == wrapper })?.1, case .dict = inner {
                return try stateDict(inner, path: path, level: level + 1)
            }
        }
        return pairs
    }
}
