import Foundation

// Builders of small hostile files for HardeningTests: stored zip archives,
// torch pickles, safetensors and PNGs, written byte by byte so that every
// field (offsets, sizes, shapes, strides) can be made wrong on purpose.

func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16((v >> 16) & 0xFFFF) }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
    }
    return ~c
}

/// A zip archive of stored entries; `zip64Size` replaces the sizes of the
/// first entry by 0xFFFFFFFF and a zip64 extra field holding that value.
func storedZip(_ entries: [(String, [UInt8])], zip64Size: UInt64? = nil) -> [UInt8] {
    var out: [UInt8] = [], central: [UInt8] = []
    for (k, (name, data)) in entries.enumerated() {
        let offset = out.count
        let n = Array(name.utf8), crc = Int(crc32(data))
        out += le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(data.count) + le32(data.count)
            + le16(n.count) + le16(0) + n + data
        var extra: [UInt8] = []
        var size = data.count
        if k == 0, let z = zip64Size {
            size = 0xFFFF_FFFF
            extra = le16(1) + le16(16) + le32(Int(z & 0xFFFF_FFFF)) + le32(Int(z >> 32)) + le32(Int(z & 0xFFFF_FFFF)) + le32(Int(z >> 32))
        }
        central += le32(0x0201_4B50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(size)
            + le32(size) + le16(n.count) + le16(extra.count) + le16(0) + le16(0) + le16(0) + le32(0) + le32(offset) + n + extra
    }
    let cdOffset = out.count
    out += central
    out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(entries.count) + le16(entries.count) + le32(central.count) + le32(cdOffset)
        + le16(0)
    return out
}

/// Pickle opcodes for a torch state dict (protocol 2).
enum Pickle {
    static func str(_ s: String) -> [UInt8] { [0x8C, UInt8(s.utf8.count)] + Array(s.utf8) }
    static func int(_ v: Int) -> [UInt8] {
        if v >= 0 && v < 256 { return [0x4B, UInt8(v)] }
        var b: [UInt8] = []
        for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
        return [0x8A, 8] + b  // LONG1, 8 bytes, two's complement
    }
    static func tuple(_ items: [[UInt8]]) -> [UInt8] { [0x28] + items.flatMap { $0 } + [0x74] }
    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
    /// torch._utils._rebuild_tensor_v2(storage key, offset, shape, stride)
    static func tensor(key: String, offset: Int = 0, shape: [Int], stride: [Int]) -> [UInt8] {
        let storage = tuple([str("storage"), global("torch", "FloatStorage"), str(key), str("cpu"), int(1)]) + [0x51]
        return global("torch._utils", "_rebuild_tensor_v2")
            + tuple([storage, int(offset), tuple(shape.map(int)), tuple(stride.map(int)), [0x89]]) + [0x52]
    }
    /// {name: tensor, ...}
    static func stateDict(_ tensors: [(String, [UInt8])]) -> [UInt8] {
        [0x80, 0x02, 0x7D, 0x28] + tensors.flatMap { str($0.0) + $0.1 } + [0x75, 0x2E]
    }
}

/// A torch.save archive with one float storage "0" of `storageFloats` values.
func torchFile(_ pickle: [UInt8], storageFloats: Int = 4) -> [UInt8] {
    storedZip([("archive/data.pkl", pickle), ("archive/data/0", [UInt8](repeating: 0, count: 4 * storageFloats))])
}

/// A .safetensors file: header entries as JSON text, then `buffer`.
func safetensors(_ entries: [String], buffer: [UInt8], declaredHeaderSize: Int? = nil) -> [UInt8] {
    let header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    let n = declaredHeaderSize ?? header.count
    return le32(n) + le32(0) + header + buffer
}

/// A PNG of 8-bit pixels (color type 0 gray, 2 RGB, 3 palette indices, 4 gray + alpha, 6 RGBA), zlib with
/// stored blocks; `palette` (RGB triples) and `transparency` (an alpha per entry) become PLTE and tRNS;
/// `claim` overrides the width and height in IHDR (the rows stay as given).
func png(width: Int, height: Int, colorType: UInt8, pixels: [UInt8], claim: (Int, Int)? = nil, palette: [UInt8] = [],
         transparency: [UInt8] = []) -> [UInt8] {
    let channels = [2: 3, 4: 2, 6: 4][Int(colorType)] ?? 1
    var raw: [UInt8] = []
    for y in 0..<height { raw.append(0); raw += pixels[(y * width * channels)..<((y + 1) * width * channels)] }
    var z: [UInt8] = [0x78, 0x01]
    var i = 0
    repeat {
        let n = min(65_535, raw.count - i)
        z += [i + n == raw.count ? 1 : 0] + le16(n) + le16(n ^ 0xFFFF) + raw[i..<(i + n)]
        i += n
    } while i < raw.count
    var a: UInt32 = 1, b: UInt32 = 0
    for x in raw { a = (a + UInt32(x)) % 65_521; b = (b + a) % 65_521 }
    z += be32(b << 16 | a)
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let td = Array(type.utf8) + data
        return be32(UInt32(data.count)) + td + be32(crc32(td))
    }
    let (w, h) = claim ?? (width, height)
    let ihdr = be32(UInt32(w)) + be32(UInt32(h)) + [8, colorType, 0, 0, 0]
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + (palette.isEmpty ? [] : chunk("PLTE", palette))
        + (transparency.isEmpty ? [] : chunk("tRNS", transparency)) + chunk("IDAT", z) + chunk("IEND", [])
}

func write(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// Mounts a tmpfs of `size` (e.g. "64k") at a new folder, for disk-full and
/// read-only cases; nil when this process may not mount (not root).
func mountTmpfs(_ name: String, size: String, readOnly: Bool = false) -> String? {
    let dir = makeTempDir(name)
    let opts = "size=\(size)" + (readOnly ? ",ro" : "")
    guard let r = try? runCommand(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir], timeout: 20), r.status == 0 else { return nil }
    return dir
}

func unmount(_ dir: String) { _ = try? runCommand(["umount", "-l", dir], timeout: 20) }
