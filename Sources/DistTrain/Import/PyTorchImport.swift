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

    // MARK: safetensors

    static func readSafetensors(_ data: Data, path: String) throws -> [String: ImportedTensor] {
        guard data.count >= 8 else { throw RuntimeError("'\(path)' is truncated") }
        let n = Int(data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }.littleEndian)
        guard n > 0, 8 + n <= data.count, let header = try? JSONSerialization.jsonObject(with: data[8..<(8 + n)]) as? [String: Any] else {
            throw RuntimeError("'\(path)': bad safetensors header")
        }
        var out: [String: ImportedTensor] = [:]
        for (name, v) in header where name != "__metadata__" {
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                  let off = d["data_offsets"] as? [Int], off.count == 2 else { throw RuntimeError("'\(path)': bad entry '\(name)'") }
            let lo = 8 + n + off[0], hi = 8 + n + off[1]
            guard lo <= hi, hi <= data.count else { throw RuntimeError("'\(path)': '\(name)' points outside the file") }
            let count = shape.reduce(1, *)
            let values = try decode(data, range: lo..<hi, dtype: dtype, count: count, name: name, path: path)
            out[name] = ImportedTensor(shape: shape, values: values, dtype: dtype)
        }
        return out
    }

    /// Little-endian elements to Float: F32, F16, BF16, F64, I64, I32, U8, BOOL.
    static func decode(_ data: Data, range: Range<Int>, dtype: String, count: Int, name: String, path: String,
                       strided: (offset: Int, shape: [Int], stride: [Int])? = nil) throws -> [Float] {
        let size: Int
        switch dtype {
        case "F32", "I32": size = 4
        case "F16", "BF16": size = 2
        case "F64", "I64": size = 8
        case "U8", "BOOL": size = 1
        default: throw RuntimeError("'\(path)': '\(name)' has dtype \(dtype), which is not imported")
        }
        // Element indices in storage: contiguous, or from (offset, shape, stride).
        var index: (Int) -> Int = { $0 }
        if let s = strided {
            let shape = s.shape, stride = s.stride, off = s.offset
            index = { i in
                var rem = i, e = off
                for d in stride.indices.reversed() { e += (rem % max(shape[d], 1)) * stride[d]; rem /= max(shape[d], 1) }
                return e
            }
        }
        var out = [Float](repeating: 0, count: count)
        try data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + range.lowerBound
            let avail = range.count / size
            for i in 0..<count {
                let e = index(i)
                guard e >= 0 && e < avail else { throw RuntimeError("'\(path)': '\(name)' reads past its storage") }
                let p = base + e * size
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
        var out: [String: ImportedTensor] = [:]
        for (k, v) in dict {
            guard case .tensor(let t) = v else { continue }
            guard let range = entries[prefix + "data/" + t.key] else {
                throw RuntimeError("'\(path)': storage '\(t.key)' of '\(k)' is missing")
            }
            let count = t.shape.reduce(1, *)
            let values = try decode(data, range: range, dtype: t.dtype, count: count, name: k, path: path,
                                    strided: (t.offset, t.shape, t.stride))
            out[k] = ImportedTensor(shape: t.shape, values: values, dtype: t.dtype)
        }
        return out
    }

    static func stateDict(_ v: PickleValue, path: String) throws -> [(String, PickleValue)] {
        guard case .dict(let d) = v else { throw RuntimeError("'\(path)': the pickle holds no dictionary of tensors") }
        let pairs: [(String, PickleValue)] = d.items.compactMap { k, v in if case .string(let s) = k { return (s, v) }; return nil }
        for wrapper in ["state_dict", "model", "model_state_dict", "module"] {
            if let inner = pairs.first(where: { $0.0 == wrapper })?.1, case .dict = inner { return try stateDict(inner, path: path) }
        }
        return pairs
    }
}
