import Foundation

// TensorBoard event files, written by our own code (rank 0 only):
// `RUN/events.out.tfevents.<seconds>.<host>.<pid>.<n>`, new files per process,
// so `tensorboard --logdir checkpoints` shows every run's curves live.
//
// Framing (TFRecord): uint64 length, uint32 masked CRC-32C of the length,
// the bytes, uint32 masked CRC-32C of the bytes; little endian. The bytes
// are an `Event` protobuf (tensorflow/core/util/event.proto):
//   Event      1 wall_time double, 2 step int64, 3 file_version string,
//              5 summary Summary, 6 session_log SessionLog
//   Summary    1 value repeated Value
//   Value      1 tag string, 2 simple_value float, 4 image Image
//   Image      1 height int32, 2 width int32, 3 colorspace int32, 4 encoded_image_string bytes (PNG)
//   SessionLog 1 status (1 = START: a reader drops the events of later steps
//              an earlier, interrupted process wrote; written on resume)

/// Protobuf's wire format, the few pieces an Event needs.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func key(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    mutating func int(_ field: Int, _ v: Int64) { key(field, 0); varint(UInt64(bitPattern: v)) }
    mutating func double(_ field: Int, _ v: Double) {
        key(field, 1)
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
    }
    mutating func float(_ field: Int, _ v: Float) {
        key(field, 5)
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
    }
    mutating func data(_ field: Int, _ v: [UInt8]) { key(field, 2); varint(UInt64(v.count)); bytes += v }
    mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ build: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        build(&inner)
        data(field, inner.bytes)
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as TFRecord masks it.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    /// TFRecord's mask: rotate right by 15, add a constant.
    static func masked(_ bytes: [UInt8]) -> UInt32 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}

/// One run's event file, appended and flushed record by record.
public final class EventWriter {
    public let path: String
    private let handle: FileHandle

    /// A new file in `dir`; `resumeStep`: this process continues a run from that
    /// step (a SessionLog START tells readers to drop what an interrupted writer left after it).
    public init(dir: String, resumeStep: Int? = nil) throws {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        // A new file, never an existing one truncated (a process may open several: training, then evaluation).
        var fd: Int32 = -1, name = ""
        for k in 0..<1000 where fd < 0 {
            name = String(format: "%@/events.out.tfevents.%d.%@.%d.%d", dir, Int(Date().timeIntervalSince1970), String(cString: host),
                          getpid(), k)
            fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd < 0 && errno != EEXIST { break }
        }
        guard fd >= 0 else { throw RuntimeError("cannot create the TensorBoard event file '\(name)': \(errnoText())") }
        path = name
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        try event(step: 0) { $0.string(3, "brain.Event:2") }
        if let s = resumeStep { try event(step: Int64(s)) { $0.message(6) { $0.int(1, 1) } } }
    }

    deinit { try? handle.close() }

    /// Scalars at `step`, one Value each.
    public func scalars(_ values: [(String, Double)], step: Int) throws {
        try event(step: Int64(step)) { e in
            e.message(5) { s in
                for (tag, v) in values where v.isFinite {
                    s.message(1) { $0.string(1, tag); $0.float(2, Float(v)) }
                }
            }
        }
    }

    /// A PNG file as an image summary at `step` (its size from the PNG's IHDR).
    public func image(_ tag: String, png: String, step: Int) throws {
        guard let bytes = FileManager.default.contents(atPath: png), bytes.count >= 24 else {
            throw RuntimeError("cannot read the PNG '\(png)' for TensorBoard")
        }
        func be32(_ o: Int) -> Int { (o..<(o + 4)).reduce(0) { $0 << 8 | Int(bytes[bytes.startIndex + $1]) } }
        let width = be32(16), height = be32(20)
        try event(step: Int64(step)) { e in
            e.message(5) { s in
                s.message(1) { v in
                    v.string(1, tag)
                    v.message(4) { i in i.int(1, Int64(height)); i.int(2, Int64(width)); i.int(3, 3); i.data(4, [UInt8](bytes)) }
                }
            }
        }
    }

    private func event(step: Int64, _ fill: (inout ProtoWriter) -> Void) throws {
        var e = ProtoWriter()
        e.double(1, Date().timeIntervalSince1970)
        e.int(2, step)
        fill(&e)
        var record: [UInt8] = []
        var length = UInt64(e.bytes.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { [UInt8]($0) }
        record += lengthBytes
        withUnsafeBytes(of: CRC32C.masked(lengthBytes).littleEndian) { record += $0 }
        record += e.bytes
        withUnsafeBytes(of: CRC32C.masked(e.bytes).littleEndian) { record += $0 }
        // One write per record, so a reader (tensorboard) sees whole records as they come;
        // no fsync per record: this runs every training step.
        do {
            try handle.write(contentsOf: Data(record))
        } catch {
            throw RuntimeError("cannot write the TensorBoard event file '\(path)': \(error.localizedDescription)")
        }
    }
}

/// Reads back the records of an event file, checking both CRCs of each (tests, tools).
public enum EventReader {
    public static func records(_ path: String) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw RuntimeError("cannot read '\(path)'") }
        let b = [UInt8](data)
        var out: [[UInt8]] = [], p = 0
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
        while p < b.count {
            guard p + 12 <= b.count else { throw RuntimeError("'\(path)': truncated record header at byte \(p)") }
            let lengthBytes = Array(b[p..<(p + 8)])
            let n = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard u32(p + 8) == CRC32C.masked(lengthBytes) else { throw RuntimeError("'\(path)': bad length CRC at byte \(p)") }
            guard n <= UInt64(b.count - p - 16) else { throw RuntimeError("'\(path)': record at byte \(p) runs past the end") }
            let body = Array(b[(p + 12)..<(p + 12 + Int(n))])
            guard u32(p + 12 + Int(n)) == CRC32C.masked(body) else { throw RuntimeError("'\(path)': bad data CRC at byte \(p)") }
            out.append(body)
            p += 16 + Int(n)
        }
        return out
    }
}
