import CImage
import Foundation

/// An 8-bit image, rows top to bottom, channels interleaved (HWC), 1 or 3 channels.
public struct RasterImage: Sendable, Equatable {
    public var width: Int, height: Int, channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels)
        self.width = width; self.height = height; self.channels = channels; self.pixels = pixels
    }

    /// Images larger than this many pixels are refused before decoding (8192 x 8192).
    public static let defaultMaxPixels = 1 << 26

    /// Reads a PNG (8/16-bit gray or RGB; alpha composited onto black) or a
    /// JPEG, by content. Truncated files and images over `maxPixels` are errors.
    public static func read(_ path: String, maxPixels: Int = defaultMaxPixels) throws -> RasterImage {
        var st = stat()
        guard stat(path, &st) == 0 else { throw RuntimeError("cannot open image '\(path)': \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw RuntimeError("image '\(path)' is not a regular file (a folder?)") }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw RuntimeError("cannot open image '\(path)': \(String(cString: strerror(errno)))") }
        var magic = [UInt8](repeating: 0, count: 4)
        let got = Foundation.read(fd, &magic, 4)
        close(fd)
        var out: UnsafeMutablePointer<UInt8>? = nil
        var w: Int32 = 0, h: Int32 = 0, c: Int32 = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc: Int32
        if got == 4 && magic.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            rc = disttrain_png_read(path, &out, &w, &h, &c, Int64(maxPixels), &err, 256)
        } else if got >= 2 && magic.starts(with: [0xFF, 0xD8]) {
            rc = disttrain_jpeg_read(path, &out, &w, &h, &c, Int64(maxPixels), &err, 256)
        } else {
            throw RuntimeError("'\(path)' is neither PNG nor JPEG")
        }
        guard rc == 0, let p = out else { throw RuntimeError("cannot decode image '\(path)': \(String(cString: err))") }
        defer { free(p) }
        let n = Int(w) * Int(h) * Int(c)
        return RasterImage(width: Int(w), height: Int(h), channels: Int(c), pixels: Array(UnsafeBufferPointer(start: p, count: n)))
    }

    public func writePNG(_ path: String) throws {
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer {
            disttrain_png_write(path, $0.baseAddress, Int32(width), Int32(height), Int32(channels), &err, 256)
        }
        if rc != 0 { throw RuntimeError("cannot write PNG '\(path)': \(String(cString: err))") }
    }

    /// Gray <-> RGB: gray from RGB by ITU-R 601-2 luma (as PIL and torchvision's
    /// Grayscale), RGB from gray by replication.
    public func converted(channels target: Int) -> RasterImage {
        if target == channels { return self }
        let n = width * height
        if target == 1 {
            var g = [UInt8](repeating: 0, count: n)
            for i in 0..<n {
                let r = Int(pixels[3 * i]), gg = Int(pixels[3 * i + 1]), b = Int(pixels[3 * i + 2])
                g[i] = UInt8((r * 299 + gg * 587 + b * 114 + 500) / 1000)
            }
            return RasterImage(width: width, height: height, channels: 1, pixels: g)
        }
        var rgb = [UInt8](repeating: 0, count: 3 * n)
        for i in 0..<n { rgb[3 * i] = pixels[i]; rgb[3 * i + 1] = pixels[i]; rgb[3 * i + 2] = pixels[i] }
        return RasterImage(width: width, height: height, channels: 3, pixels: rgb)
    }

    /// Bilinear resampling with half-pixel centres (align_corners = false);
    /// when shrinking by more than 2x, a box prefilter first (antialiasing).
    public func resized(width W: Int, height H: Int) -> RasterImage {
        if W == width && H == height { return self }
        var src = self
        while src.width >= 2 * W && src.height >= 2 * H { src = src.halved() }
        var out = [UInt8](repeating: 0, count: W * H * channels)
        let sx = Double(src.width) / Double(W), sy = Double(src.height) / Double(H)
        for y in 0..<H {
            let fy = max(0, min(Double(src.height - 1), (Double(y) + 0.5) * sy - 0.5))
            let y0 = Int(fy), y1 = min(y0 + 1, src.height - 1), wy = fy - Double(y0)
            for x in 0..<W {
                let fx = max(0, min(Double(src.width - 1), (Double(x) + 0.5) * sx - 0.5))
                let x0 = Int(fx), x1 = min(x0 + 1, src.width - 1), wx = fx - Double(x0)
                for c in 0..<channels {
                    func p(_ yy: Int, _ xx: Int) -> Double { Double(src.pixels[(yy * src.width + xx) * channels + c]) }
                    let v = (1 - wy) * ((1 - wx) * p(y0, x0) + wx * p(y0, x1)) + wy * ((1 - wx) * p(y1, x0) + wx * p(y1, x1))
                    out[(y * W + x) * channels + c] = UInt8(max(0, min(255, v.rounded())))
                }
            }
        }
        return RasterImage(width: W, height: H, channels: channels, pixels: out)
    }

    /// Nearest-neighbour resampling on the same half-pixel grid as `resized`
    /// (output pixel x takes source floor((x + 0.5) * width / W)): for label
    /// masks, whose values are classes and must not be blended.
    public func resizedNearest(width W: Int, height H: Int) -> RasterImage {
        if W == width && H == height { return self }
        var out = [UInt8](repeating: 0, count: W * H * channels)
        for y in 0..<H {
            let sy = min((2 * y + 1) * height / (2 * H), height - 1)
            for x in 0..<W {
                let sx = min((2 * x + 1) * width / (2 * W), width - 1)
                for c in 0..<channels { out[(y * W + x) * channels + c] = pixels[(sy * width + sx) * channels + c] }
            }
        }
        return RasterImage(width: W, height: H, channels: channels, pixels: out)
    }

    /// 2x2 box average.
    func halved() -> RasterImage {
        let W = width / 2, H = height / 2
        var out = [UInt8](repeating: 0, count: W * H * channels)
        for y in 0..<H { for x in 0..<W { for c in 0..<channels {
            let s = Int(pixels[((2 * y) * width + 2 * x) * channels + c]) + Int(pixels[((2 * y) * width + 2 * x + 1) * channels + c])
                + Int(pixels[((2 * y + 1) * width + 2 * x) * channels + c]) + Int(pixels[((2 * y + 1) * width + 2 * x + 1) * channels + c])
            out[(y * W + x) * channels + c] = UInt8((s + 2) / 4)
        } } }
        return RasterImage(width: W, height: H, channels: channels, pixels: out)
    }

    /// Planar CHW bytes.
    public var chw: [UInt8] {
        if channels == 1 { return pixels }
        var out = [UInt8](repeating: 0, count: pixels.count)
        let n = width * height
        for i in 0..<n { for c in 0..<channels { out[c * n + i] = pixels[i * channels + c] } }
        return out
    }
}
