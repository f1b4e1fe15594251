@testable import DistTrain
import Foundation
import Net
import XCTest

/// Hostile DICOM and NIfTI files end in one named error: sizes are checked from
/// the header before anything is allocated (and against the bytes the file
/// holds), --max-pixels applies per frame or slice and bounds a whole file,
/// data that end early or do not decode cleanly are errors (never zero-filled or
/// grey), scaling that is not finite is refused, and nothing opens a FIFO.
/// Every file is built here, byte by byte (DICOM) or by patching what
/// NiftiVolume.write makes (NIfTI).
final class HostileMedicalTests: XCTestCase {
    let fixtures = packageRoot + "/Tests/Fixtures/"

    // MARK: builders

    static let explicitLE = "1.2.840.10008.1.2.1", jpegBaseline = "1.2.840.10008.1.2.4.50", rle = "1.2.840.10008.1.2.5"

    /// One DICOM element, explicit VR little endian (values padded to even length).
    static func element(_ group: Int, _ elem: Int, _ vr: String, _ value: [UInt8]) -> [UInt8] {
        var v = value
        if v.count % 2 == 1 { v.append(["UI", "OB"].contains(vr) ? 0 : 0x20) }
        let long = ["OB", "OW", "OF", "SQ", "UT", "UN"].contains(vr)
        return le16(group) + le16(elem) + Array(vr.utf8) + (long ? [0, 0] + le32(v.count) : le16(v.count)) + v
    }

    /// A DICOM Part 10 CT image written element by element, so that any attribute can
    /// be made wrong on purpose: `strings` sets (or, with nil, drops) text attributes
    /// by tag; `fragments` makes the pixel data encapsulated (one fragment each).
    static func dicom(rows: Int = 4, cols: Int = 4, bits: Int = 16, signed: Bool = true, pixels: [UInt8]? = nil,
                      fragments: [[UInt8]]? = nil, syntax: String? = nil, strings: [Int: String?] = [:]) -> [UInt8] {
        let syntax = syntax ?? (fragments == nil ? explicitLE : jpegBaseline)
        var text: [Int: (String, String)] = [  // tag: (VR, value)
            0x0008_0016: ("UI", "1.2.840.10008.5.1.4.1.1.2"), 0x0008_0018: ("UI", "1.2.826.0.1.3680043.2.1143.7"),
            0x0008_0060: ("CS", "CT"), 0x0010_0020: ("LO", "PAT1"), 0x0020_000D: ("UI", "1.2.826.0.1.3680043.2.1143.8"),
            0x0020_000E: ("UI", "1.2.826.0.1.3680043.2.1143.9"), 0x0020_0013: ("IS", "1"), 0x0028_0004: ("CS", "MONOCHROME2"),
            0x0028_1052: ("DS", "-1024"), 0x0028_1053: ("DS", "1"),
        ]
        let vrs = [0x0028_0008: "IS", 0x0028_1052: "DS", 0x0028_1053: "DS", 0x0028_1050: "DS", 0x0028_1051: "DS", 0x0020_0032: "DS"]
        for (tag, value) in strings {
            if let value { text[tag] = (text[tag]?.0 ?? vrs[tag] ?? "LO", value) } else { text[tag] = nil }
        }
        var items: [(Int, [UInt8])] = text.map { tag, tv in (tag, element(tag >> 16, tag & 0xFFFF, tv.0, Array(tv.1.utf8))) }
        for (tag, v) in [(0x0028_0002, 1), (0x0028_0010, rows), (0x0028_0011, cols), (0x0028_0100, bits), (0x0028_0101, bits),
                         (0x0028_0102, bits - 1), (0x0028_0103, signed ? 1 : 0)] {
            items.append((tag, element(tag >> 16, tag & 0xFFFF, "US", le16(v))))
        }
        if let fragments {
            var seq = le16(0x7FE0) + le16(0x0010) + Array("OB".utf8) + [0, 0] + le32(0xFFFF_FFFF)
            seq += le16(0xFFFE) + le16(0xE000) + le32(0)  // an empty offset table
            for f in fragments {
                let even = f.count % 2 == 0 ? f : f + [0]
                seq += le16(0xFFFE) + le16(0xE000) + le32(even.count) + even
            }
            seq += le16(0xFFFE) + le16(0xE0DD) + le32(0)
            items.append((0x7FE0_0010, seq))
        } else {
            let data = pixels ?? (0..<(rows * cols * bits / 8)).map { UInt8(truncatingIfNeeded: $0 * 7) }
            items.append((0x7FE0_0010, element(0x7FE0, 0x0010, bits == 8 ? "OB" : "OW", data)))
        }
        let meta = element(2, 1, "OB", [0, 1]) + element(2, 2, "UI", Array("1.2.840.10008.5.1.4.1.1.2".utf8))
            + element(2, 3, "UI", Array("1.2.826.0.1.3680043.2.1143.7".utf8)) + element(2, 0x10, "UI", Array(syntax.utf8))
        return [UInt8](repeating: 0, count: 128) + Array("DICM".utf8) + element(2, 0, "UL", le32(meta.count)) + meta
            + items.sorted { $0.0 < $1.0 }.flatMap(\.1)
    }

    /// int16 little endian bytes.
    static func s16(_ values: [Int]) -> [UInt8] { values.flatMap { le16($0 & 0xFFFF) } }
    static func f32(_ v: Float) -> [UInt8] { le32(Int(v.bitPattern)) }

    /// A 4 x 3 x 2 NIfTI volume written by NiftiVolume.write (.nii: header, 4 bytes, voxels at 352).
    func niftiBytes(_ dir: String) throws -> [UInt8] {
        let path = dir + "/good.nii"
        try NiftiVolume.write(path, hu: (0..<24).map { Float($0 * 10 - 100) }, nx: 4, ny: 3, nz: 2, spacing: 1)
        let b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(b.count, 352 + 48)
        return b
    }

    /// `bytes` with each (offset, new bytes) written over.
    static func patched(_ bytes: [UInt8], _ edits: [(Int, [UInt8])]) -> [UInt8] {
        var b = bytes
        for (at, new) in edits { b.replaceSubrange(at..<(at + new.count), with: new) }
        return b
    }

    // nifti_1_header offsets: dim[8] (int16), datatype, bitpix, vox_offset, scl_slope, scl_inter (float32).
    static let dimAt = 40, datatypeAt = 70, bitpixAt = 72, voxOffsetAt = 108, sclSlopeAt = 112, sclInterAt = 116
    static func dims(_ d: [Int]) -> (Int, [UInt8]) { (dimAt, s16([d.count] + d + [Int](repeating: 1, count: 7 - d.count))) }

    /// A gzip member of stored (uncompressed) deflate blocks, as .nii.gz readers inflate
    /// it; blocks from `corruptFrom` on get a wrong NLEN (zlib: "invalid stored block lengths").
    static func gzipStored(_ data: [UInt8], blockSize: Int = 65_535, corruptFrom: Int = .max) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3]
        var i = 0, k = 0
        repeat {
            let n = min(blockSize, data.count - i)
            out += [i + n == data.count ? 1 : 0] + le16(n) + le16(k >= corruptFrom ? n : n ^ 0xFFFF) + data[i..<(i + n)]
            i += n; k += 1
        } while i < data.count
        return out + le32(Int(crc32(data))) + le32(data.count & 0xFFFF_FFFF)
    }

    /// Runs `body` on its own thread; nil when it has not returned within `seconds` (a
    /// reader blocked opening `fifo` is then released by opening its write end).
    func within<T>(_ seconds: Double, fifo: String, _ body: @escaping () -> T) -> T? {
        let box = ResultBox<T>(), done = DispatchSemaphore(value: 0)
        Thread.detachNewThread { box.value = body(); done.signal() }
        if done.wait(timeout: .now() + seconds) == .timedOut {
            let fd = open(fifo, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
            _ = done.wait(timeout: .now() + 5)
            return nil
        }
        return box.value
    }

    func errorText(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "no error" } catch { return "\(error)" }
    }

    /// A run folder for predict (config.json and an untrained ResNet-18 of width 4 at 32 px, window lung): no training needed.
    func untrainedRun() throws -> String {
        let run = makeTempDir("hostile-medical-run")
        var c = TrainConfig()
        c.run = run; c.imageSize = 32; c.width = 4; c.inChannels = 1; c.numClasses = 2; c.classNames = ["NORMAL", "COVID"]
        c.mean = [0.5]; c.std = [0.25]; c.window = "lung"
        try FileManager.default.createDirectory(atPath: run + "/ckpt", withIntermediateDirectories: true)
        let n = ResNet(c.netConfig)
        try Checkpoint.save(run + "/ckpt/best.h5", net: n, optimizer: Optimizer(OptimizerConfig(kind: .sgd), store: n.store),
                            state: TrainState(), config: c)
        try c.save(to: run + "/config.json")
        return run
    }

    /// Exit 1 with one line that holds every word.
    func assertOneLineFailure(_ r: CommandResult, _ words: String..., file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, r.output, file: file, line: line)
        let lines = r.output.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        XCTAssertEqual(lines.count, 1, r.output, file: file, line: line)
        for w in words { XCTAssertTrue(r.output.contains(w), "'\(w)' not in: \(r.output)", file: file, line: line) }
    }

    // MARK: the builders make valid files

    func testTheBuildersMakeFilesThatRead() throws {
        let dir = makeTempDir("hm-good")
        try write(Self.dicom(pixels: Self.s16([-1024, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 32767])), to: dir + "/a.dcm")
        let d = try DicomFile.read(dir + "/a.dcm")
        XCTAssertEqual([d.frames, d.rows, d.cols], [1, 4, 4])
        XCTAssertEqual(Array(d.values.prefix(4)), [-2048, -1025, -1024, -1023])
        XCTAssertEqual(d.values.last, 32767 - 1024)
        let nii = try niftiBytes(dir)
        let v = try NiftiVolume.read(dir + "/good.nii")
        XCTAssertEqual(v.dims, [4, 3, 2])
        XCTAssertEqual(v.values, (0..<24).map { Float($0 * 10 - 100) })
        try write(Self.gzipStored(nii), to: dir + "/good.nii.gz")
        XCTAssertEqual(try NiftiVolume.read(dir + "/good.nii.gz").values, v.values, "stored-block gzip reads")
        XCTAssertTrue(try NiftiVolume.read(dir + "/good.nii.gz", voxels: false).values.isEmpty, "header only")
        // JPEG baseline: the 8-bit grey tiny.jpg as the one fragment decodes to what libjpeg makes of the .jpg.
        let jpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "tiny.jpg")))
        try write(Self.dicom(rows: 16, cols: 16, bits: 8, signed: false, fragments: [jpeg], strings: [0x0028_1052: "0"]), to: dir + "/j.dcm")
        let j = try DicomFile.read(dir + "/j.dcm")
        XCTAssertEqual(j.transferSyntax, Self.jpegBaseline)
        XCTAssertEqual(j.values, try RasterImage.read(fixtures + "tiny.jpg").pixels.map(Float.init))
    }

    // MARK: 1. Rows or Columns 0

    func testDICOMWithZeroRowsOrColumnsIsRefused() throws {
        let dir = makeTempDir("hm-zero")
        for (name, rows, cols) in [("rows0", 0, 4), ("cols0", 4, 0), ("both0", 0, 0)] {
            let path = "\(dir)/\(name).dcm"
            try write(Self.dicom(rows: rows, cols: cols, pixels: Self.s16([1, 2, 3, 4])), to: path)
            for pixels in [true, false] {
                assertError(try DicomFile.read(path, pixels: pixels), contains: path, "Rows \(rows), Columns \(cols): an image needs one row")
            }
        }
    }

    // MARK: 2. claims larger than the file, checked before allocating

    func testDICOMClaimingMorePixelsOrFramesThanItHoldsIsRefusedBeforeAllocating() throws {
        let dir = makeTempDir("hm-claims")
        let data = [UInt8](repeating: 7, count: 2048)
        let huge = dir + "/65535.dcm", frames = dir + "/frames.dcm", wrong = dir + "/wrong.dcm", zero = dir + "/zero-frames.dcm"
        try write(Self.dicom(rows: 65535, cols: 65535, pixels: data), to: huge)
        try write(Self.dicom(rows: 16, cols: 16, pixels: data, strings: [0x0028_0008: "2147483647"]), to: frames)
        try write(Self.dicom(rows: 16, cols: 16, pixels: data, strings: [0x0028_0008: "5"]), to: wrong)
        try write(Self.dicom(pixels: Self.s16([Int](repeating: 0, count: 16)), strings: [0x0028_0008: "0"]), to: zero)
        XCTAssertLessThan(try Data(contentsOf: URL(fileURLWithPath: huge)).count, 3000, "a 3 KB file")
        for pixels in [true, false] {  // the header alone (prepare's listing) is checked too
            assertError(try DicomFile.read(huge, pixels: pixels), contains: huge,
                        "65535x65535 pixels is over the limit of 67108864 pixels (--max-pixels)")
            assertError(try DicomFile.read(frames, pixels: pixels), contains: frames,
                        "2147483647 frames of 16x16 make 549755813632 pixels, over the limit of 268435456 pixels in one file")
            // Within the limits the pixel data's own length decides.
            assertError(try DicomFile.read(huge, pixels: pixels, maxPixels: 1 << 40), contains: huge,
                        "pixel data holds 2048 bytes; 1 frame(s) of 65535x65535 at 16 bits need 8589672450")
            assertError(try DicomFile.read(frames, pixels: pixels, maxPixels: 1 << 40), contains: frames, "pixel data holds 2048 bytes")
            assertError(try DicomFile.read(wrong, pixels: pixels), contains: wrong, "5 frame(s) of 16x16 at 16 bits need 2560")
            assertError(try DicomFile.read(zero, pixels: pixels), contains: zero, "NumberOfFrames '0' is not a frame count")
        }
        // A pixel data element whose length runs past the end of the file is never read into memory.
        let long = dir + "/long.dcm"
        var bytes = Self.dicom(rows: 16, cols: 16, pixels: [UInt8](repeating: 1, count: 512))
        bytes.replaceSubrange((bytes.count - 516)..<(bytes.count - 512), with: le32(100_000_000))
        try write(bytes, to: long)
        for pixels in [true, false] {
            assertError(try DicomFile.read(long, pixels: pixels), contains: long, "not a readable DICOM file (I/O suspension or premature end of stream)")
        }
        // Compressed: a frame needs one fragment at least (DCMTK would size every claimed frame first).
        let jpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "tiny.jpg")))
        let many = dir + "/many.dcm"
        try write(Self.dicom(rows: 16, cols: 16, bits: 8, signed: false, fragments: [jpeg], strings: [0x0028_0008: "100000"]), to: many)
        for pixels in [true, false] {
            assertError(try DicomFile.read(many, pixels: pixels), contains: many, "100000 frames in 1 compressed fragments")
        }
        XCTAssertLessThan(peakRSSMiB(), 4096, "nothing was sized from the claims")
    }

    // MARK: 3. --max-pixels for DICOM and NIfTI

    func testMaxPixelsAppliesToEveryFrameAndSliceAndBoundsAWholeFile() throws {
        let dir = makeTempDir("hm-limit")
        let dcm = dir + "/a.dcm"
        try write(Self.dicom(pixels: Self.s16([Int](repeating: 5, count: 16))), to: dcm)
        XCTAssertEqual(try DicomFile.read(dcm, maxPixels: 16).values.count, 16)
        for pixels in [true, false] {
            assertError(try DicomFile.read(dcm, pixels: pixels, maxPixels: 15), contains: dcm,
                        "4x4 pixels is over the limit of 15 pixels (--max-pixels)")
        }
        let nii = dir + "/good.nii"
        _ = try niftiBytes(dir)
        XCTAssertEqual(try NiftiVolume.read(nii, maxPixels: 12).dims, [4, 3, 2], "a slice is 4 x 3")
        for voxels in [true, false] {
            assertError(try NiftiVolume.read(nii, maxPixels: 11, voxels: voxels), contains: nii,
                        "4x3 pixels is over the limit of 11 pixels (--max-pixels)")
        }
        // The whole file: 4 x --max-pixels, never less than 2^28.
        XCTAssertEqual(MedicalLimits.of(maxPixels: RasterImage.defaultMaxPixels).max_voxels, 1 << 28)
        XCTAssertEqual(MedicalLimits.of(maxPixels: 1 << 30).max_voxels, 1 << 32)
        XCTAssertEqual(MedicalLimits.of(maxPixels: 10).max_voxels, 1 << 28)
        XCTAssertEqual(MedicalLimits.of(maxPixels: Int.max).max_voxels, Int64.max)
        let frames = dir + "/frames.dcm"  // 1025 frames of 512 x 512: 2^28 + 2^18 pixels, in a small file
        try write(Self.dicom(rows: 512, cols: 512, pixels: [UInt8](repeating: 0, count: 64), strings: [0x0028_0008: "1025"]), to: frames)
        assertError(try DicomFile.read(frames, pixels: false), contains: frames,
                    "1025 frames of 512x512 make 268697600 pixels, over the limit of 268435456")
        assertError(try DicomFile.read(frames, pixels: false, maxPixels: 1 << 27), contains: frames, "pixel data holds 64 bytes",
                    "(truncated, or Rows/Columns/NumberOfFrames wrong)")
    }

    // MARK: 4. NIfTI claiming more than the file holds, and gzip bombs

    func testNIfTIClaimingMoreThanItsFileOrTheLimitIsRefusedFromTheHeader() throws {
        let dir = makeTempDir("hm-nii-claims")
        let good = try niftiBytes(dir)
        // 9 KB claiming 512 x 512 x 512 float32 (512 MiB): within the limits, not within the file.
        let claim = dir + "/claim.nii"
        try write(Self.patched(good, [Self.dims([512, 512, 512]), (Self.datatypeAt, le16(16)), (Self.bitpixAt, le16(32))])
                  + [UInt8](repeating: 0, count: 9000 - good.count), to: claim)
        for voxels in [true, false] {
            assertError(try NiftiVolume.read(claim, voxels: voxels), contains: claim,
                        "voxel data would end at byte 536871264 (vox_offset 352 + dim 512x512x512 x 4 bytes), the file has 9000 (truncated?)")
        }
        // A .nii.gz whose header claims 1024 slices of 2048 x 2048 int16 (8 GiB inflated) is refused before inflating anything.
        let bomb = dir + "/bomb.nii.gz"
        try write(Self.gzipStored(Self.patched(good, [Self.dims([2048, 2048, 1024])]) + [UInt8](repeating: 0, count: 1 << 20)), to: bomb)
        assertError(try NiftiVolume.read(bomb), contains: bomb,
                    "1024 slices of 2048x2048 make 4294967296 pixels, over the limit of 268435456 pixels in one file "
                        + "(4 x --max-pixels, at least 2^28)")
        XCTAssertLessThan(peakRSSMiB(), 4096)
    }

    // MARK: 5. truncated voxel data, vox_offset past the end, short or corrupt streams

    func testTruncatedVoxelDataOrAVoxOffsetPastTheEndIsAnErrorNotZeros() throws {
        let dir = makeTempDir("hm-nii-short")
        let good = try niftiBytes(dir)
        let cases: [(String, [UInt8], String)] = [
            ("truncated.nii", Array(good.prefix(good.count - 10)),
             "voxel data would end at byte 400 (vox_offset 352 + dim 4x3x2 x 2 bytes), the file has 390"),
            ("offset.nii", Self.patched(good, [(Self.voxOffsetAt, Self.f32(1_000_000))]), "voxel data would end at byte 1000048"),
            ("offset-nan.nii", Self.patched(good, [(Self.voxOffsetAt, Self.f32(.nan))]), "vox_offset nan is not a file offset"),
            ("offset-huge.nii", Self.patched(good, [(Self.voxOffsetAt, Self.f32(1e30))]), "vox_offset 1e+30 is not a file offset"),
            ("short.nii.gz", Self.gzipStored(Array(good.prefix(good.count - 10))), "voxel data ends after 19 of 24 voxels (truncated)"),
            ("offset.nii.gz", Self.gzipStored(Self.patched(good, [(Self.voxOffsetAt, Self.f32(100_000))])), "voxel data ends after 0 of 24"),
            ("corrupt-header.nii.gz", Self.gzipStored(good, corruptFrom: 0), "not a readable NIfTI-1 file"),
        ]
        for (name, bytes, words) in cases {
            let path = "\(dir)/\(name)"
            try write(bytes, to: path)
            assertError(try NiftiVolume.read(path), contains: path, words)
        }
        // A stream cut inside the voxels (the header intact): the count read is named.
        var big = Self.patched(good, [Self.dims([64, 64, 64])])
        big += [UInt8](repeating: 1, count: 100)
        let cut = dir + "/cut.nii.gz"
        try write(Self.gzipStored(big), to: cut)
        assertError(try NiftiVolume.read(cut), contains: cut, "voxel data ends after 74 of 262144 voxels (truncated)")
        // A stream that turns corrupt inside the voxels (zlib reads 16 KiB ahead, so the header lies in a good first block).
        let corrupt = dir + "/corrupt.nii.gz"
        let volume = Self.patched(good, [Self.dims([64, 64, 4])]).prefix(352) + [UInt8](repeating: 3, count: 64 * 64 * 4 * 2)
        try write(Self.gzipStored(Array(volume), blockSize: 20_000, corruptFrom: 1), to: corrupt)
        assertError(try NiftiVolume.read(corrupt), contains: corrupt, "voxel data corrupt after 0 of 16384 voxels (the stream does not inflate)")
    }

    // MARK: 6. more than three dimensions

    func testNIfTIOfFourToSevenDimensionsIsRefusedNotCutToItsFirstVolume() throws {
        let dir = makeTempDir("hm-nii-dims")
        let good = try niftiBytes(dir)
        for (d, words) in [([4, 3, 2, 2], "4-D NIfTI (dim 4x3x2x2)"), ([4, 3, 2, 1, 2], "5-D NIfTI (dim 4x3x2x1x2)"),
                           ([4, 3, 2, 1, 1, 2], "6-D NIfTI (dim 4x3x2x1x1x2)"), ([4, 3, 2, 1, 1, 1, 3], "7-D NIfTI (dim 4x3x2x1x1x1x3)")] {
            let path = "\(dir)/\(d.count)d.nii"
            // Voxels for every volume, so that only the dimensions are wrong.
            try write(Self.patched(good, [Self.dims(d)]) + [UInt8](repeating: 0, count: 48 * (d.reduce(1, *) / 24 - 1)), to: path)
            assertError(try NiftiVolume.read(path, voxels: false), contains: path, words, "is not supported: give one 3-D volume")
        }
        // Trailing dimensions of 1 are a 3-D volume.
        let ones = dir + "/ones.nii"
        try write(Self.patched(good, [Self.dims([4, 3, 2, 1, 1, 1, 1])]), to: ones)
        XCTAssertEqual(try NiftiVolume.read(ones).dims, [4, 3, 2])
    }

    // MARK: 7. rescaling that is not finite

    func testNonFiniteOrOverflowingRescaleIsRefusedNamingTheAttribute() throws {
        let dir = makeTempDir("hm-rescale")
        let px = Self.s16([Int](repeating: 100, count: 16))
        let cases: [([Int: String?], String)] = [
            ([0x0028_1053: "NaN"], "RescaleSlope 'NaN' is not a finite number"),
            ([0x0028_1053: "inf"], "RescaleSlope 'inf' is not a finite number"),
            ([0x0028_1053: "abc"], "RescaleSlope 'abc' is not a finite number"),
            ([0x0028_1053: "1e300"], "RescaleSlope 1e+300 with RescaleIntercept -1024 takes stored values -32768...32767 beyond float32"),
            ([0x0028_1053: "0"], "RescaleSlope 0 makes every pixel the same value"),
            ([0x0028_1052: "NaN"], "RescaleIntercept 'NaN' is not a finite number"),
            ([0x0028_1052: "-1e39"], "RescaleSlope 1 with RescaleIntercept -1e+39 takes stored values"),
        ]
        for (k, (strings, words)) in cases.enumerated() {
            let path = "\(dir)/\(k).dcm"
            try write(Self.dicom(pixels: px, strings: strings), to: path)
            for pixels in [true, false] { assertError(try DicomFile.read(path, pixels: pixels), contains: path, words) }
        }
        // A NaN window is no window: --window file then says the file has none.
        let win = dir + "/window.dcm"
        try write(Self.dicom(pixels: px, strings: [0x0028_1050: "NaN", 0x0028_1051: "400"]), to: win)
        XCTAssertNil(try DicomFile.read(win).window)

        // NIfTI: scl_slope 0 is "no scaling" (NIfTI-1); a non-finite one or scl_inter, or a product beyond float32, is refused.
        let good = try niftiBytes(dir)
        let stored = (0..<24).map { Float($0 * 10 - 100 + 1024) }
        let zero = dir + "/slope0.nii"
        try write(Self.patched(good, [(Self.sclSlopeAt, Self.f32(0))]), to: zero)
        XCTAssertEqual(try NiftiVolume.read(zero).values, stored, "scl_slope 0: the stored values")
        // A non-finite scl_slope is "no scaling" too, as niftilib and nibabel read it (scl_inter unused).
        for (k, slope) in [Float.nan, .infinity].enumerated() {
            let path = "\(dir)/slope-nonfinite-\(k).nii"
            try write(Self.patched(good, [(Self.sclSlopeAt, Self.f32(slope)), (Self.sclInterAt, Self.f32(.nan))]), to: path)
            XCTAssertEqual(try NiftiVolume.read(path).values, stored, "scl_slope \(slope): the stored values")
        }
        let nifti: [([(Int, [UInt8])], String)] = [
            ([(Self.sclInterAt, Self.f32(-.infinity))], "scl_inter -inf is not a finite number"),
            ([(Self.sclInterAt, Self.f32(.nan))], "scl_inter nan is not a finite number"),
            ([(Self.sclSlopeAt, Self.f32(1e35))], "scl_slope 1e+35 with scl_inter -1024 takes INT16 values beyond float32"),
        ]
        for (k, (edits, words)) in nifti.enumerated() {
            let path = "\(dir)/\(k).nii"
            try write(Self.patched(good, edits), to: path)
            assertError(try NiftiVolume.read(path, voxels: false), contains: path, words)
        }
        // float32 voxels: each value must be finite once scaled.
        let floats = dir + "/float.nii"
        let values: [Float] = (0..<24).map { $0 == 5 ? .nan : Float($0) }
        try write(Self.patched(Array(good.prefix(352)), [(Self.datatypeAt, le16(16)), (Self.bitpixAt, le16(32))]) + values.flatMap(Self.f32),
                  to: floats)
        assertError(try NiftiVolume.read(floats), contains: floats, "voxel 5 is nan, nan once scaled: not a finite float32")
    }

    // MARK: 8. a corrupt JPEG frame, 9. corrupt is not unsupported

    func testCorruptJPEGFrameInDICOMIsRefusedAsTheSameBytesInAJPGAre() throws {
        let dir = makeTempDir("hm-jpeg")
        let jpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "tiny.jpg")))
        // The entropy-coded data cut short before the EOI marker: libjpeg warns and fills the rest grey.
        let corrupt = Array(jpeg.prefix(jpeg.count - 2 - 40)) + [0xFF, 0xD9]
        try write(corrupt, to: dir + "/corrupt.jpg")
        assertError(try RasterImage.read(dir + "/corrupt.jpg"), contains: "corrupt.jpg")
        let path = dir + "/corrupt.dcm"
        try write(Self.dicom(rows: 16, cols: 16, bits: 8, signed: false, fragments: [corrupt], strings: [0x0028_1052: "0"]), to: path)
        assertError(try DicomFile.read(path), contains: path, "decoding failed (corrupt compressed pixel data: Corrupt JPEG data")
        // The header alone does not decode: listing such a file still works.
        XCTAssertEqual(try DicomFile.read(path, pixels: false).rows, 16)
    }

    func testCorruptCompressedDataIsNotCalledAnUnsupportedTransferSyntax() throws {
        let dir = makeTempDir("hm-codec")
        // RLE whose header declares 7 segments for a 16-bit image (2 expected).
        let rleHeader = le32(7) + [UInt8](repeating: 0, count: 60) + [UInt8](repeating: 0, count: 32)
        let cases: [(String, [UInt8], String)] = [
            ("rle.dcm", Self.dicom(fragments: [rleHeader], syntax: Self.rle),
             "decoding failed (corrupt compressed pixel data: Number of stripes"),
            ("garbage-jpeg.dcm", Self.dicom(rows: 16, cols: 16, bits: 8, signed: false, fragments: [[UInt8](repeating: 0x42, count: 64)]),
             "decoding failed (corrupt compressed pixel data:"),
        ]
        for (name, bytes, words) in cases {
            let path = "\(dir)/\(name)"
            try write(bytes, to: path)
            assertError(try DicomFile.read(path), contains: path, words)
            XCTAssertFalse(errorText { try DicomFile.read(path) }.contains("cannot be decoded here"))
        }
        // PixelData declared with a VR other than OB/OW (DCMTK would make it a string or a sequence, not
        // pixel data) in a JPEG file: an error naming the file (DCMTK's parser refuses these layouts
        // itself; the reader also checks the element's type before it reads fragments), never a crash.
        let jpeg = Self.dicom(fragments: [[UInt8](repeating: 0x42, count: 64)])
        let start = try XCTUnwrap((0..<(jpeg.count - 6)).last { jpeg[$0..<($0 + 6)].elementsEqual([0xE0, 0x7F, 0x10, 0x00, 0x4F, 0x42]) })
        func renamed(_ vr: String) -> [UInt8] {
            Array(jpeg[start...]).enumerated().map { $0.offset == 4 ? Array(vr.utf8)[0] : $0.offset == 5 ? Array(vr.utf8)[1] : $0.element }
        }
        for (vr, element) in [("LO", Self.element(0x7FE0, 0x0010, "LO", Array("abcd".utf8))), ("UN", renamed("UN")), ("SQ", renamed("SQ"))] {
            let path = "\(dir)/pixeldata-\(vr).dcm"
            try write(Array(jpeg[..<start]) + element, to: path)
            for pixels in [true, false] { assertError(try DicomFile.read(path, pixels: pixels), contains: path) }
        }
        // JPEG 2000 decodes through OpenJPEG (JPEG2000Tests); this stub (SOC, SIZ, then zeros) is corrupt.
        let j2k = fixtures + "medical/jpeg2000.dcm"
        assertError(try DicomFile.read(j2k), contains: j2k, "decoding failed (corrupt compressed pixel data: JPEG 2000")
        XCTAssertEqual(try DicomFile.read(j2k, pixels: false).rows, 12, "its header still lists")
        // A syntax without a decoder here (JPEG 2000 Part 2 multi-component) is refused by its UID, header still read.
        let part2 = "\(dir)/j2k-part2.dcm"
        try write(Self.dicom(fragments: [[0xFF, 0x4F, 0xFF, 0x51] + [UInt8](repeating: 0, count: 60)], syntax: "1.2.840.10008.1.2.4.92"),
                  to: part2)
        assertError(try DicomFile.read(part2), contains: part2, "transfer syntax 1.2.840.10008.1.2.4.92", "cannot be decoded here")
        XCTAssertEqual(try DicomFile.read(part2, pixels: false).rows, 4, "its header still lists")
    }

    // MARK: 10. FIFOs

    func testFIFOsAreNeverOpenedByTheSnifferOrTheReaders() throws {
        let dir = makeTempDir("hm-fifo")
        for name in ["plain", "x.dcm", "x.nii", "x.nii.gz"] { XCTAssertEqual(mkfifo("\(dir)/\(name)", 0o600), 0) }
        let plain = dir + "/plain"
        XCTAssertEqual(within(10, fifo: plain) { DicomFile.looksLikeDICOM(plain) }, false, "no DICOM, and no open")
        let readers: [(String, (String) throws -> Any)] = [
            ("x.dcm", { try DicomFile.read($0) }), ("x.dcm", { try DicomFile.read($0, pixels: false) }),
            ("x.nii", { try NiftiVolume.read($0) }), ("x.nii.gz", { try NiftiVolume.read($0, voxels: false) }),
        ]
        for (name, read) in readers {
            let path = "\(dir)/\(name)"
            let text = within(10, fifo: path) { self.errorText { try read(path) } }
            XCTAssertEqual(text, "'\(path)': not a regular file (a FIFO)", "\(name) hangs or is not refused")
        }
        assertError(try DicomFile.read(dir), contains: "not a regular file (a folder)")
    }

    // MARK: through the command line

    func testHostileMedicalFilesEndInOneNamedLineThroughTheCommandLine() throws {
        let root = makeTempDir("hm-cli")
        let run = try untrainedRun()
        let jpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "tiny.jpg")))
        let rows0 = root + "/rows0.dcm", corrupt = root + "/corrupt-jpeg.dcm", small = root + "/small.dcm"
        try write(Self.dicom(rows: 0, pixels: Self.s16([1, 2])), to: rows0)
        try write(Self.dicom(rows: 16, cols: 16, bits: 8, signed: false, fragments: [Array(jpeg.prefix(jpeg.count - 42)) + [0xFF, 0xD9]]),
                  to: corrupt)
        try write(Self.dicom(pixels: Self.s16([Int](repeating: 1000, count: 16))), to: small)
        XCTAssertEqual(mkfifo(root + "/fifo.png", 0o600), 0)
        XCTAssertEqual(mkfifo(root + "/fifo.dcm", 0o600), 0)
        let predict = { (args: [String]) in
            try runCommand([disttrainBinary, "predict"] + args + ["--run", run, "--out", root + "/pred", "--cams", "none"], timeout: 60)
        }
        XCTAssertEqual(try predict([small]).status, 0, "the run predicts a good file")
        assertOneLineFailure(try predict([rows0]), rows0, "Rows 0, Columns 4")
        assertOneLineFailure(try predict([corrupt]), corrupt, "decoding failed (corrupt compressed pixel data: Corrupt JPEG data")
        assertOneLineFailure(try predict([small, "--max-pixels", "15"]), small, "4x4 pixels is over the limit of 15 pixels (--max-pixels)")
        for fifo in [root + "/fifo.png", root + "/fifo.dcm"] {
            let r = try predict([fifo])
            XCTAssertLessThan(r.seconds, 50, "predict on a FIFO hangs")
            assertOneLineFailure(r, "'\(fifo)': not a regular file (a FIFO)")
        }
        // prepare: a 2 KB file claiming 2^31 - 1 frames among good ones, and --max-pixels; no data set is written.
        let data = root + "/study"
        for (k, cls) in ["A", "B"].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(data)/\(cls)", withIntermediateDirectories: true)
            let ids: [Int: String?] = [0x0010_0020: "P\(k)", 0x0020_000E: "1.2.3.\(k)", 0x0008_0018: "1.2.3.\(k).1"]
            try write(Self.dicom(pixels: Self.s16([Int](repeating: k, count: 16)), strings: ids), to: "\(data)/\(cls)/a.dcm")
        }
        let out = root + "/study.h5"
        assertOneLineFailure(try runCommand([disttrainBinary, "prepare", "--images", data, "--out", out, "--max-pixels", "15"], timeout: 60),
                             "\(data)/A/a.dcm", "4x4 pixels is over the limit of 15 pixels (--max-pixels)")
        let bomb = "\(data)/B/frames.dcm"
        try write(Self.dicom(rows: 16, cols: 16, pixels: [UInt8](repeating: 0, count: 2048),
                             strings: [0x0028_0008: "2147483647", 0x0008_0018: "1.2.3.9"]), to: bomb)
        let r = try runCommand([disttrainBinary, "prepare", "--images", data, "--out", out], timeout: 60)
        assertOneLineFailure(r, bomb, "2147483647 frames of 16x16")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// prepare's threads ask for one volume at once (consecutive slices): it is decoded once and
    /// shared, not once per thread (memory would hold a copy per thread).
    func testConcurrentReadsOfOneVolumeDecodeItOnce() throws {
        let dir = makeTempDir("hm-cache"), path = dir + "/v.nii"
        try write(try niftiBytes(dir), to: path)
        let cache = MedicalCache()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in _ = try? cache.load(path, maxPixels: 1 << 20) }
        XCTAssertEqual(cache.decodes, 1)
        _ = try cache.load(path, maxPixels: 1 << 20)
        XCTAssertEqual(cache.decodes, 1, "a hit decodes nothing")
        XCTAssertThrowsError(try cache.load(path, maxPixels: 4), "a smaller limit is not answered from the cache")
    }
}

final class ResultBox<T>: @unchecked Sendable { var value: T? }
