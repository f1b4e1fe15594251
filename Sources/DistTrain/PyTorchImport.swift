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
    public var dtype: String
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
        throw RuntimeError("'\(path)' is neither a torch.save zip archive nor .safetensors (the legacy pre-1.6 format is not read: re-save it with torch >= 1.6)")
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
            guard let range = entries[prefix + "data/" + t.key] else { throw RuntimeError("'\(path)': storage '\(t.key)' of '\(k)' is missing") }
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

/// The stored (uncompressed) entries of a zip archive: name -> byte range.
enum ZipReader {
    static func entries(_ d: Data, path: String) throws -> [String: Range<Int>] {
        func u16(_ o: Int) -> Int { Int(d[d.startIndex + o]) | Int(d[d.startIndex + o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func u64(_ o: Int) -> Int { u32(o) | u32(o + 4) << 32 }
        var eocd = -1
        var i = d.count - 22
        while i >= max(0, d.count - 22 - 65_535) {
            if u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw RuntimeError("'\(path)': not a zip archive (no end of central directory)") }
        var count = u16(eocd + 10), cdOffset = u32(eocd + 16)
        if cdOffset == 0xFFFF_FFFF || count == 0xFFFF, eocd >= 20, u32(eocd - 20) == 0x0706_4B50 {
            let z = u64(eocd - 12)  // zip64 end of central directory record
            count = u64(z + 32); cdOffset = u64(z + 48)
        }
        var out: [String: Range<Int>] = [:]
        var p = cdOffset
        for _ in 0..<count {
            guard p + 46 <= d.count, u32(p) == 0x0201_4B50 else { throw RuntimeError("'\(path)': corrupt zip central directory") }
            let method = u16(p + 10)
            var size = u32(p + 20)
            let nameLen = u16(p + 28), extraLen = u16(p + 30), commentLen = u16(p + 32)
            var local = u32(p + 42)
            let name = String(decoding: d[(d.startIndex + p + 46)..<(d.startIndex + p + 46 + nameLen)], as: UTF8.self)
            // zip64 extra field: sizes and offset that did not fit.
            var e = p + 46 + nameLen
            while e + 4 <= p + 46 + nameLen + extraLen {
                let id = u16(e), len = u16(e + 2)
                if id == 1 {
                    var q = e + 4
                    if u32(p + 24) == 0xFFFF_FFFF { q += 8 }
                    if size == 0xFFFF_FFFF { size = u64(q); q += 8 }
                    if local == 0xFFFF_FFFF { local = u64(q) }
                }
                e += 4 + len
            }
            guard method == 0 else { throw RuntimeError("'\(path)': entry '\(name)' is compressed; torch.save archives are stored") }
            guard local + 30 <= d.count, u32(local) == 0x0403_4B50 else { throw RuntimeError("'\(path)': corrupt zip entry '\(name)'") }
            let start = local + 30 + u16(local + 26) + u16(local + 28)
            guard start + size <= d.count else { throw RuntimeError("'\(path)': entry '\(name)' is truncated") }
            out[name] = start..<(start + size)
            p += 46 + nameLen + extraLen + commentLen
        }
        return out
    }
}

struct TensorRef { var key: String; var dtype: String; var offset: Int; var shape: [Int]; var stride: [Int] }

final class PickleList { var items: [PickleValue] = [] }
final class PickleDict { var items: [(PickleValue, PickleValue)] = [] }

indirect enum PickleValue {
    case none, bool(Bool), int(Int), float(Double), string(String), bytes(Data)
    case tuple([PickleValue]), list(PickleList), dict(PickleDict)
    case global(String), storage(key: String, dtype: String), tensor(TensorRef)
    case mark
}

/// A pickle VM for state dicts (protocols 2-5) that constructs only
/// dictionaries, lists, tuples, scalars and tensors.
struct PickleReader {
    let bytes: [UInt8]
    let path: String
    var pos = 0
    var stack: [PickleValue] = []
    var memo: [Int: PickleValue] = [:]

    static let storageTypes: [String: String] = [
        "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
        "LongStorage": "I64", "IntStorage": "I32", "ByteStorage": "U8", "BoolStorage": "BOOL",
    ]
    static let allowedGlobals: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter", "torch.serialization._get_layout", "torch.strided",
    ]

    init(_ data: Data, path: String) { bytes = [UInt8](data); self.path = path }

    func fail(_ s: String) -> RuntimeError { RuntimeError("'\(path)': \(s)") }

    mutating func u8() throws -> Int { guard pos < bytes.count else { throw fail("pickle ends early") }; pos += 1; return Int(bytes[pos - 1]) }
    mutating func le(_ n: Int) throws -> Int {
        guard pos + n <= bytes.count else { throw fail("pickle ends early") }
        var v = 0
        for i in 0..<n { v |= Int(bytes[pos + i]) << (8 * i) }
        pos += n
        return v
    }
    mutating func take(_ n: Int) throws -> [UInt8] {
        guard n >= 0, pos + n <= bytes.count else { throw fail("pickle ends early") }
        pos += n
        return Array(bytes[(pos - n)..<pos])
    }
    mutating func line() throws -> String {
        guard let nl = bytes[pos...].firstIndex(of: 10) else { throw fail("pickle ends early") }
        let s = String(decoding: bytes[pos..<nl], as: UTF8.self)
        pos = nl + 1
        return s
    }
    mutating func pop() throws -> PickleValue { guard let v = stack.popLast() else { throw fail("pickle stack underflow") }; return v }
    mutating func popToMark() throws -> [PickleValue] {
        guard let m = stack.lastIndex(where: { if case .mark = $0 { return true }; return false }) else { throw fail("pickle MARK missing") }
        let items = Array(stack[(m + 1)...])
        stack.removeSubrange(m...)
        return items
    }

    func global(_ module: String, _ name: String) throws -> PickleValue {
        let full = "\(module).\(name)"
        if module == "torch", let dt = PickleReader.storageTypes[name] { return .global("storage:" + dt) }
        guard PickleReader.allowedGlobals.contains(full) else {
            throw fail("refusing to load '\(full)': only tensor state dicts are read, and this pickle asks for other code")
        }
        return .global(full)
    }

    mutating func load() throws -> PickleValue {
        while true {
            let op = try u8()
            switch op {
            case 0x80: _ = try u8()                                      // PROTO
            case 0x95: pos += 8                                          // FRAME
            case 0x2E: return try pop()                                  // STOP
            case 0x28: stack.append(.mark)                               // MARK
            case 0x7D: let d = PickleDict(); stack.append(.dict(d))      // EMPTY_DICT
            case 0x5D: stack.append(.list(PickleList()))                 // EMPTY_LIST
            case 0x29: stack.append(.tuple([]))                          // EMPTY_TUPLE
            case 0x4E: stack.append(.none)
            case 0x88: stack.append(.bool(true))
            case 0x89: stack.append(.bool(false))
            case 0x4B: stack.append(.int(try le(1)))                     // BININT1
            case 0x4D: stack.append(.int(try le(2)))                     // BININT2
            case 0x4A: stack.append(.int(Int(Int32(truncatingIfNeeded: try le(4)))))  // BININT
            case 0x8A:                                                   // LONG1
                let n = try u8()
                let b = try take(n)
                var v = 0
                for (i, x) in b.enumerated() where i < 8 { v |= Int(x) << (8 * i) }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 { v -= 1 << (8 * n) }
                stack.append(.int(v))
            case 0x47:                                                   // BINFLOAT (big-endian)
                let b = try take(8)
                stack.append(.float(Double(bitPattern: b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58: stack.append(.string(String(decoding: try take(try le(4)), as: UTF8.self)))  // BINUNICODE
            case 0x8C: stack.append(.string(String(decoding: try take(try u8()), as: UTF8.self)))   // SHORT_BINUNICODE
            case 0x43: stack.append(.bytes(Data(try take(try u8()))))    // SHORT_BINBYTES
            case 0x42: stack.append(.bytes(Data(try take(try le(4)))))   // BINBYTES
            case 0x63:                                                   // GLOBAL
                let module = try line(), name = try line()
                stack.append(try global(module, name))
            case 0x93:                                                   // STACK_GLOBAL
                guard case .string(let name) = try pop(), case .string(let module) = try pop() else { throw fail("bad STACK_GLOBAL") }
                stack.append(try global(module, name))
            case 0x71: memo[try le(1)] = stack.last                      // BINPUT
            case 0x72: memo[try le(4)] = stack.last                      // LONG_BINPUT
            case 0x94: memo[memo.count] = stack.last                     // MEMOIZE
            case 0x68: guard let v = memo[try le(1)] else { throw fail("bad memo") }; stack.append(v)
            case 0x6A: guard let v = memo[try le(4)] else { throw fail("bad memo") }; stack.append(v)
            case 0x74: stack.append(.tuple(try popToMark()))             // TUPLE
            case 0x85: stack.append(.tuple([try pop()]))
            case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b]))
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c]))
            case 0x61:                                                   // APPEND
                let v = try pop()
                guard case .list(let l) = stack.last else { throw fail("APPEND to a non-list") }
                l.items.append(v)
            case 0x65:                                                   // APPENDS
                let items = try popToMark()
                guard case .list(let l) = stack.last else { throw fail("APPENDS to a non-list") }
                l.items += items
            case 0x73:                                                   // SETITEM
                let v = try pop(), k = try pop()
                guard case .dict(let d) = stack.last else { throw fail("SETITEM on a non-dict") }
                d.items.append((k, v))
            case 0x75:                                                   // SETITEMS
                let items = try popToMark()
                guard case .dict(let d) = stack.last else { throw fail("SETITEMS on a non-dict") }
                var i = 0
                while i + 1 < items.count { d.items.append((items[i], items[i + 1])); i += 2 }
            case 0x51:                                                   // BINPERSID
                guard case .tuple(let t) = try pop(), t.count >= 5, case .string("storage") = t[0],
                      case .global(let g) = t[1], g.hasPrefix("storage:"), case .string(let key) = t[2] else {
                    throw fail("unsupported persistent id (only tensor storages are read)")
                }
                stack.append(.storage(key: key, dtype: String(g.dropFirst("storage:".count))))
            case 0x52:                                                   // REDUCE
                let args = try pop(), fn = try pop()
                stack.append(try reduce(fn, args))
            case 0x62:                                                   // BUILD: state for OrderedDict etc.; ignored
                _ = try pop()
            case 0x30: _ = try pop()                                     // POP
            case 0x32: stack.append(stack.last ?? .none)                 // DUP
            default:
                throw fail(String(format: "unsupported pickle opcode 0x%02X at byte %d", op, pos - 1))
            }
        }
    }

    func reduce(_ fn: PickleValue, _ args: PickleValue) throws -> PickleValue {
        guard case .global(let name) = fn, case .tuple(let a) = args else { throw fail("unsupported REDUCE") }
        switch name {
        case "collections.OrderedDict": return .dict(PickleDict())
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            guard a.count >= 4, case .storage(let key, let dtype) = a[0], case .int(let off) = a[1],
                  case .tuple(let size) = a[2], case .tuple(let stride) = a[3] else { throw fail("bad tensor record") }
            let ints: ([PickleValue]) throws -> [Int] = { try $0.map { if case .int(let i) = $0 { return i }; throw self.fail("bad tensor shape") } }
            return .tensor(TensorRef(key: key, dtype: dtype, offset: off, shape: try ints(size), stride: try ints(stride)))
        case "torch._utils._rebuild_parameter":
            guard let first = a.first else { throw fail("bad parameter record") }
            return first
        default: throw fail("refusing to call '\(name)'")
        }
    }
}

/// Turns imported tensors into a transfer source: torchvision keys checked
/// against the architecture, every shape checked, written as a disttrain
/// checkpoint (model/<key>) with ImageNet normalisation attributes.
public enum WeightImporter {
    public static func normalise(_ raw: [String: ImportedTensor]) -> [String: ImportedTensor] {
        var out: [String: ImportedTensor] = [:]
        for (k, v) in raw {
            var key = k
            for p in ["module.", "model.", "backbone."] where key.hasPrefix(p) { key = String(key.dropFirst(p.count)) }
            out[key] = v
        }
        return out
    }

    /// resnet50 when bottlenecks are present; resnet34 when layer3 has 6 blocks.
    public static func guessArch(_ t: [String: ImportedTensor]) -> Arch {
        if t["layer1.0.conv3.weight"] != nil { return .resnet50 }
        if t["layer3.5.conv1.weight"] != nil { return .resnet34 }
        return .resnet18
    }

    /// Returns the network and (loaded, skipped) key lists.
    public static func build(_ tensors: [String: ImportedTensor], arch: Arch?, path: String) throws -> (ResNet, [String], [String]) {
        let t = normalise(tensors)
        guard let conv1 = t["conv1.weight"], conv1.shape.count == 4, let fc = t["fc.weight"], fc.shape.count == 2 else {
            throw RuntimeError("'\(path)' has no conv1.weight / fc.weight: not a torchvision or timm ResNet state dict")
        }
        let guessed = guessArch(t)
        if let a = arch, a != guessed {
            throw RuntimeError("'\(path)' holds a \(guessed.rawValue) (by its keys), not the \(a.rawValue) asked for")
        }
        let net = ResNet(ResNetConfig(arch: guessed, inChannels: conv1.shape[1], numClasses: fc.shape[0], width: conv1.shape[0]))
        var loaded: [String] = []
        for e in net.store.entries {
            guard let v = t[e.name] else {
                if e.kind == .counter { continue }  // num_batches_tracked is optional (timm omits it)
                throw RuntimeError("'\(path)' has no '\(e.name)' (a \(guessed.rawValue) needs it)")
            }
            if e.kind == .counter { net.store.counters[e.offset] = Int64(v.values.first ?? 0); loaded.append(e.name); continue }
            guard v.shape == e.shape else { throw RuntimeError("'\(path)': '\(e.name)' has shape \(v.shape), a \(guessed.rawValue) needs \(e.shape)") }
            net.store.write(e, v.values)
            loaded.append(e.name)
        }
        let known = Set(net.store.entries.map(\.name))
        return (net, loaded, t.keys.filter { !known.contains($0) }.sorted())
    }
}
