import Foundation
import SwiftProtobuf

// TensorBoard event files, written by our own code (rank 0 only):
// `RUN/events.out.tfevents.<seconds>.<host>.<pid>.<n>`, new files per process,
// so `tensorboard --logdir checkpoints` shows every run's curves live.
//
// Framing (TFRecord), written here since it is not protobuf: uint64 length,
// uint32 masked CRC-32C of the length, the bytes, uint32 masked CRC-32C of the
// bytes; little endian. The bytes are an `Event`, the message generated from
// TensorBoard's event.proto and summary.proto (proto/tensorboard/compat/proto,
// Sources/DistTrain/Proto): a file_version first, then summaries (simple_value
// scalars, PNG images) and, on resume, a SessionLog START.

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
        try event(step: 0) { $0.fileVersion = "brain.Event:2" }
        // A reader drops every event at or after a START's step that earlier files hold, so START goes one past
        // the checkpoint: the steps it kept stay, those an interrupted process wrote after it go.
        if let s = resumeStep { try event(step: Int64(s) + 1) { $0.sessionLog.status = .start } }
    }

    deinit { try? handle.close() }

    /// Scalars at `step`, one Value each.
    public func scalars(_ values: [(String, Double)], step: Int) throws {
        try event(step: Int64(step)) { e in
            e.summary.value = values.filter { $0.1.isFinite }.map { tag, v in
                var value = Tensorboard_Summary.Value()
                value.tag = tag
                value.simpleValue = Float(v)
                return value
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
        var image = Tensorboard_Summary.Image()
        image.height = Int32(clamping: height)
        image.width = Int32(clamping: width)
        image.colorspace = 3  // RGB
        image.encodedImageString = bytes
        var value = Tensorboard_Summary.Value()
        value.tag = tag
        value.image = image
        try event(step: Int64(step)) { $0.summary.value = [value] }
    }

    private func event(step: Int64, _ fill: (inout Tensorboard_Event) -> Void) throws {
        var e = Tensorboard_Event()
        e.wallTime = Date().timeIntervalSince1970
        e.step = step
        fill(&e)
        let body: [UInt8]
        do {
            body = try e.serializedBytes()
        } catch {
            throw RuntimeError("cannot encode a TensorBoard event for '\(path)': \(error)")
        }
        var record: [UInt8] = []
        var length = UInt64(body.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { [UInt8]($0) }
        record += lengthBytes
        withUnsafeBytes(of: CRC32C.masked(lengthBytes).littleEndian) { record += $0 }
        record += body
        withUnsafeBytes(of: CRC32C.masked(body).littleEndian) { record += $0 }
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
