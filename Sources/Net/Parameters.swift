// Parameters, gradients and buffers, each in one contiguous allocation.
//
// As llm.c's malloc_and_point_parameters: a model first declares every tensor
// (name, shape, kind) in torchvision state_dict order, then the store makes
// one allocation per kind and layers keep offsets into it. Zeroing all
// gradients is one memset and a distributed step all-reduces one buffer.

public enum StateKind: Sendable, Equatable {
    /// Trainable: lives in `values`, with its gradient at the same offset in `grads`.
    case parameter
    /// Float buffer (BatchNorm running mean/var): lives in `buffers`.
    case buffer
    /// Int64 counter (BatchNorm num_batches_tracked): lives in `counters`, shape [].
    case counter
}

/// One state_dict entry.
public struct StateEntry: Sendable {
    public let name: String
    public let shape: [Int]
    public let kind: StateKind
    /// Offset in the store of its kind (`values`/`grads`, `buffers` or `counters`).
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// Offset and size of a parameter inside the store.
public struct ParamRef: Sendable {
    public let entry: Int
    public let offset: Int
    public let count: Int
}

public final class ParameterStore {
    public private(set) var entries: [StateEntry] = []
    public private(set) var parameterCount = 0
    public private(set) var bufferCount = 0
    public private(set) var counterCount = 0
    public private(set) var values: UnsafeMutablePointer<Float>
    public private(set) var grads: UnsafeMutablePointer<Float>
    public private(set) var buffers: UnsafeMutablePointer<Float>
    public private(set) var counters: UnsafeMutablePointer<Int64>
    /// Per entry: excluded from optimizer updates (and weight gradients skipped).
    public var frozen: [Bool] = []
    private var sealed = false

    public init() {
        values = .allocate(capacity: 1); grads = .allocate(capacity: 1)
        buffers = .allocate(capacity: 1); counters = .allocate(capacity: 1)
    }

    deinit {
        values.deallocate(); grads.deallocate(); buffers.deallocate(); counters.deallocate()
    }

    /// Declares a tensor; returns where it will live. Call `seal()` after the last one.
    @discardableResult
    public func declare(_ name: String, _ shape: [Int], _ kind: StateKind) -> ParamRef {
        precondition(!sealed, "declare after seal")
        let n = shape.reduce(1, *)
        let offset: Int
        switch kind {
        case .parameter: offset = parameterCount; parameterCount += n
        case .buffer: offset = bufferCount; bufferCount += n
        case .counter: offset = counterCount; counterCount += 1
        }
        entries.append(StateEntry(name: name, shape: shape, kind: kind, offset: offset))
        return ParamRef(entry: entries.count - 1, offset: offset, count: n)
    }

    /// Allocates the memory of every kind, zeroed.
    public func seal() {
        precondition(!sealed)
        sealed = true
        values.deallocate(); grads.deallocate(); buffers.deallocate(); counters.deallocate()
        values = Tensor.allocate(max(parameterCount, 1))
        grads = Tensor.allocate(max(parameterCount, 1))
        buffers = Tensor.allocate(max(bufferCount, 1))
        counters = .allocate(capacity: max(counterCount, 1))
        values.initialize(repeating: 0, count: max(parameterCount, 1))
        grads.initialize(repeating: 0, count: max(parameterCount, 1))
        buffers.initialize(repeating: 0, count: max(bufferCount, 1))
        counters.initialize(repeating: 0, count: max(counterCount, 1))
        frozen = Array(repeating: false, count: entries.count)
        for (i, e) in entries.enumerated() { index[e.name] = i }
    }

    private var index: [String: Int] = [:]

    public func entry(named name: String) -> StateEntry? { index[name].map { entries[$0] } }
    public func entryIndex(named name: String) -> Int? { index[name] }

    public func zeroGrads() { grads.update(repeating: 0, count: parameterCount) }

    /// The trainable parameters in state_dict order.
    public func namedParameters() -> [StateEntry] { entries.filter { $0.kind == .parameter } }

    /// The float memory of a float entry (parameter or buffer).
    public func pointer(_ e: StateEntry) -> UnsafeMutablePointer<Float> {
        switch e.kind {
        case .parameter: return values + e.offset
        case .buffer: return buffers + e.offset
        case .counter: preconditionFailure("\(e.name) is an Int64 counter")
        }
    }

    public func gradPointer(_ e: StateEntry) -> UnsafeMutablePointer<Float> {
        precondition(e.kind == .parameter)
        return grads + e.offset
    }

    /// Reads an entry as floats (counters converted).
    public func read(_ e: StateEntry) -> [Float] {
        if e.kind == .counter { return [Float(counters[e.offset])] }
        return Array(UnsafeBufferPointer(start: pointer(e), count: e.count))
    }

    /// Reads a tensor by the reference `declare` returned.
    public func read(_ ref: ParamRef) -> [Float] { read(entries[ref.entry]) }

    public func readGrad(_ e: StateEntry) -> [Float] {
        Array(UnsafeBufferPointer(start: gradPointer(e), count: e.count))
    }

    /// Writes floats into an entry (counters rounded).
    public func write(_ e: StateEntry, _ v: [Float]) {
        precondition(v.count == e.count, "\(e.name): \(v.count) values for shape \(e.shape)")
        if e.kind == .counter { counters[e.offset] = Int64(v[0].rounded()); return }
        v.withUnsafeBufferPointer { pointer(e).update(from: $0.baseAddress!, count: e.count) }
    }

    /// Freezes (or thaws) every parameter whose name starts with one of `prefixes`
    /// ("" matches all). Returns how many entries changed.
    @discardableResult
    public func setFrozen(_ value: Bool, prefixes: [String]) -> Int {
        var n = 0
        for (i, e) in entries.enumerated() where e.kind == .parameter {
            if prefixes.contains(where: { e.name.hasPrefix($0) }) && frozen[i] != value {
                frozen[i] = value
                n += 1
            }
        }
        return n
    }

    public func isFrozen(_ ref: ParamRef) -> Bool { frozen[ref.entry] }

    /// Sum of |x| and sum of x over all parameters, for replica checks and logs.
    public func checksum() -> (sum: Double, abs: Double) {
        var s = 0.0, a = 0.0
        for i in 0..<parameterCount { let v = Double(values[i]); s += v; a += abs(v) }
        return (s, a)
    }
}
