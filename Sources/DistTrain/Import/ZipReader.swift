import Foundation

/// The stored (uncompressed) entries of a zip archive: name -> byte range.
/// Every offset and length read from the file is checked against the file
/// with non-trapping arithmetic before it is used (zip64 sizes may be 2^63).
enum ZipReader {
    static func entries(_ d: Data, path: String) throws -> [String: Range<Int>] {
        let bytes = [UInt8](d)
        let n = bytes.count
        func corrupt(_ what: String) -> RuntimeError { RuntimeError("'\(path)': corrupt zip archive (\(what))") }
        /// Little-endian unsigned of `width` bytes at `o`, or a named error past the end.
        func le(_ o: Int, _ width: Int) throws -> UInt64 {
            guard o >= 0, o <= n - width else { throw corrupt("a field at byte \(o) lies past the end") }
            var v: UInt64 = 0
            for i in 0..<width { v |= UInt64(bytes[o + i]) << (8 * UInt64(i)) }
            return v
        }
        func u16(_ o: Int) throws -> Int { Int(try le(o, 2)) }
        func u32(_ o: Int) throws -> Int { Int(try le(o, 4)) }
        /// An offset or size: must fit in the file.
        func position(_ v: UInt64, _ what: String) throws -> Int {
            guard v <= UInt64(n) else { throw corrupt("\(what) \(v) is past the end of the \(n)-byte file") }
            return Int(v)
        }
        var eocd = -1
        var i = n - 22
        while i >= max(0, n - 22 - 65_535) {
            if try u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw RuntimeError("'\(path)': not a zip archive (no end of central directory)") }
        var count = try u16(eocd + 10), cdOffset = try u32(eocd + 16)
        if cdOffset == 0xFFFF_FFFF || count == 0xFFFF, eocd >= 20, try u32(eocd - 20) == 0x0706_4B50 {
            let z = try position(try le(eocd - 12, 8), "zip64 record offset")  // zip64 end of central directory record
            count = try position(try le(z + 32, 8), "entry count")
            cdOffset = try position(try le(z + 48, 8), "central directory offset")
        }
        guard count <= n / 46 else { throw corrupt("\(count) entries cannot fit") }
        var out: [String: Range<Int>] = [:]
        var p = cdOffset
        for _ in 0..<count {
            guard try u32(p) == 0x0201_4B50 else { throw corrupt("central directory") }
            let method = try u16(p + 10)
            var size = UInt64(try u32(p + 20))
            let nameLen = try u16(p + 28), extraLen = try u16(p + 30), commentLen = try u16(p + 32)
            var local = UInt64(try u32(p + 42))
            guard p + 46 + nameLen <= n else { throw corrupt("an entry name lies past the end") }
            let name = String(decoding: bytes[(p + 46)..<(p + 46 + nameLen)], as: UTF8.self)
            // zip64 extra field: sizes and offset that did not fit.
            var e = p + 46 + nameLen
            while e + 4 <= p + 46 + nameLen + extraLen {
                let id = try u16(e), len = try u16(e + 2)
                if id == 1 {
                    var q = e + 4
                    if try u32(p + 24) == 0xFFFF_FFFF { q += 8 }
                    if size == 0xFFFF_FFFF { size = try le(q, 8); q += 8 }
                    if local == 0xFFFF_FFFF { local = try le(q, 8) }
                }
                e += 4 + len
            }
            guard method == 0 else { throw RuntimeError("'\(path)': entry '\(name)' is compressed; torch.save archives are stored") }
            let localAt = try position(local, "offset of '\(name)'")
            guard try u32(localAt) == 0x0403_4B50 else { throw corrupt("entry '\(name)'") }
            let start = localAt + 30 + (try u16(localAt + 26)) + (try u16(localAt + 28))
            let length = try position(size, "size of '\(name)'")
            guard start <= n, length <= n - start else { throw RuntimeError("'\(path)': entry '\(name)' is truncated") }
            out[name] = start..<(start + length)
            p += 46 + nameLen + extraLen + commentLen
        }
        return out
    }
}
