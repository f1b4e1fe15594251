// Tensors: float32, NCHW, contiguous, in owned 64-byte aligned memory.
// A 4-D activation may instead be laid out channels-last (NHWC, `channelsLast`;
// `shape` stays (N, C, H, W)): the bf16 path keeps activations so between
// oneDNN's convolutions, as PyTorch's channels_last does (ChannelsLast.swift).
//
// A Tensor is a reusable buffer: `resize(_:)` changes the logical shape and
// only reallocates when the new element count exceeds the capacity, so after
// the first training step no layer allocates again.

/// Owned, aligned float memory that is never copied on write.
public final class Tensor {
    public private(set) var shape: [Int]
    public private(set) var count: Int
    public private(set) var capacity: Int
    public private(set) var data: UnsafeMutablePointer<Float>
    /// The memory order of a 4-D tensor: (N, H, W, C) when true, else (N, C, H, W).
    public private(set) var channelsLast = false
    /// The memory holds `count` bfloat16 values (UInt16, in the first half) instead of floats:
    /// a BatchNorm's output or input gradient handed straight to a bf16 convolution (ChannelsLast.swift). `array` widens them.
    public private(set) var bf16 = false

    public init(_ shape: [Int] = [0]) {
        let n = shape.reduce(1, *)
        self.shape = shape
        self.count = n
        self.capacity = max(n, 1)
        self.data = Tensor.allocate(max(n, 1))
        data.initialize(repeating: 0, count: capacity)
    }

    public convenience init(_ shape: [Int], values: [Float]) {
        self.init(shape)
        precondition(values.count == count, "Tensor(\(shape)) given \(values.count) values")
        values.withUnsafeBufferPointer { src in data.update(from: src.baseAddress!, count: count) }
    }

    deinit { data.deallocate() }

    static func allocate(_ n: Int) -> UnsafeMutablePointer<Float> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Float>.stride, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: n)
    }

    /// Sets the shape (and the memory order); contents are unspecified if the capacity had to grow.
    public func resize(_ newShape: [Int], channelsLast: Bool = false, bf16: Bool = false) {
        precondition(!channelsLast || newShape.count == 4, "channels-last needs (N, C, H, W), got \(newShape)")
        self.channelsLast = channelsLast
        self.bf16 = bf16
        let n = newShape.reduce(1, *)
        if n > capacity {
            data.deallocate()
            capacity = n
            data = Tensor.allocate(n)
            data.initialize(repeating: 0, count: n)
        }
        if newShape != shape { shape = newShape }
        count = n
    }

    public func zero() { data.update(repeating: 0, count: count) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }
    public var array: [Float] {
        guard bf16 else { return Array(buffer) }
        let raw = UnsafeRawPointer(data)
        return (0..<count).map { Float(bitPattern: UInt32(raw.load(fromByteOffset: 2 * $0, as: UInt16.self)) << 16) }
    }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public func copy(from other: Tensor) {
        resize(other.shape, channelsLast: other.channelsLast, bf16: other.bf16)
        data.update(from: other.data, count: count)
    }
}

/// A growable float scratch area shared by the layers of one model, for
/// im2col columns and GEMM staging. Never shrinks.
public final class Workspace {
    private var buffers: [Tensor] = []
    public init() {}
    /// Scratch slot `i` with room for at least `n` floats.
    public func slot(_ i: Int, _ n: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= i { buffers.append(Tensor([1])) }
        let t = buffers[i]
        if t.capacity < n { t.resize([n]) }
        return t.data
    }
    public var bytes: Int { buffers.reduce(0) { $0 + $1.capacity * 4 } }
}
