import Foundation

struct TensorRef { var key: String; var dtype: String; var offset: Int; var shape: [Int]; var stride: [Int] }

/// Containers remember how deeply they nest (1 = holds no container), so a
/// hostile pickle cannot build a structure whose walk or release overflows the
/// stack. Once inside another container (or a tuple) a container is `attached`
/// and may not grow: its parent's depth would go stale (a chain built through
/// the memo). Pickles of state dicts fill every container before nesting it.
final class PickleList { var items: [PickleValue] = []; var depth = 1; var attached = false }
final class PickleDict { var items: [(PickleValue, PickleValue)] = []; var depth = 1; var attached = false }

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

    /// Containers nest at most this deep (a state dict needs about 4).
    static let maxDepth = 32

    /// Nesting depth of a value; recurses only into tuples, whose depth was
    /// checked when they were built.
    func depth(_ v: PickleValue) -> Int {
        switch v {
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        case .tuple(let items): return 1 + (items.map(depth).max() ?? 0)
        default: return 0
        }
    }

    /// `v` as it goes into a container of depth `current`: the container's new depth, checked.
    func nest(_ v: PickleValue, into current: Int) throws -> Int {
        if case .list(let l) = v { l.attached = true }
        if case .dict(let d) = v { d.attached = true }
        let d = max(current, 1 + depth(v))
        guard d <= PickleReader.maxDepth else { throw fail("pickle nests deeper than \(PickleReader.maxDepth) levels") }
        return d
    }

    mutating func pushTuple(_ items: [PickleValue]) throws {
        for v in items { _ = try nest(v, into: 0) }
        _ = try nest(.tuple(items), into: 0)
        stack.append(.tuple(items))
    }

    /// The list or dict on top of the stack, if it may still grow.
    func growing(_ what: String) throws -> PickleValue {
        guard let top = stack.last else { throw fail("\(what) on an empty stack") }
        var attached = false
        if case .list(let l) = top { attached = l.attached }
        if case .dict(let d) = top { attached = d.attached }
        guard !attached else { throw fail("\(what) into a container already nested in another (not a state dict)") }
        return top
    }

    mutating func u8() throws -> Int {
        guard pos < bytes.count else { throw fail("pickle ends early") }
        pos += 1
        return Int(bytes[pos - 1])
    }
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
        guard let m = stack.lastIndex(where: { if case .mark = $0 { return true }; return false }) else {
            throw fail("pickle MARK missing")
        }
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
            case 0x95: _ = try take(8)                                   // FRAME
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
            case 0x74: try pushTuple(try popToMark())                    // TUPLE
            case 0x85: try pushTuple([try pop()])
            case 0x86: let b = try pop(), a = try pop(); try pushTuple([a, b])
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try pushTuple([a, b, c])
            case 0x61:                                                   // APPEND
                let v = try pop()
                guard case .list(let l) = try growing("APPEND") else { throw fail("APPEND to a non-list") }
                l.depth = try nest(v, into: l.depth)
                l.items.append(v)
            case 0x65:                                                   // APPENDS
                let items = try popToMark()
                guard case .list(let l) = try growing("APPENDS") else { throw fail("APPENDS to a non-list") }
                for v in items { l.depth = try nest(v, into: l.depth) }
                l.items += items
            case 0x73:                                                   // SETITEM
                let v = try pop(), k = try pop()
                guard case .dict(let d) = try growing("SETITEM") else { throw fail("SETITEM on a non-dict") }
                d.depth = try nest(v, into: try nest(k, into: d.depth))
                d.items.append((k, v))
            case 0x75:                                                   // SETITEMS
                let items = try popToMark()
                guard case .dict(let d) = try growing("SETITEMS") else { throw fail("SETITEMS on a non-dict") }
                for v in items { d.depth = try nest(v, into: d.depth) }
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
            let ints: ([PickleValue]) throws -> [Int] = {
                try $0.map { if case .int(let i) = $0 { return i }; throw self.fail("bad tensor shape") }
            }
            return .tensor(TensorRef(key: key, dtype: dtype, offset: off, shape: try ints(size), stride: try ints(stride)))
        case "torch._utils._rebuild_parameter":
            guard let first = a.first else { throw fail("bad parameter record") }
            return first
        default: throw fail("refusing to call '\(name)'")
        }
    }
}
