import Foundation

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
