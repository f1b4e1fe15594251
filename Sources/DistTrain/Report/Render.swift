import Foundation

// Rendering: colours, colormaps, overlays, grids and text on RGB8 canvases
// written through libpng. Plots are described in Plot.swift and drawn here;
// text uses the built-in bitmap font (BitmapFont.swift).

/// An sRGB colour; the report's palette is named here once.
public struct Color: Equatable, Sendable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(r: UInt8, g: UInt8, b: UInt8) { self.r = r; self.g = g; self.b = b }
    public var hex: String { String(format: "#%02x%02x%02x", r, g, b) }

    public static let white = Color(r: 255, g: 255, b: 255), axis = Color(r: 51, g: 51, b: 51)
    public static let grid = Color(r: 229, g: 229, b: 229), marker = Color(r: 110, g: 110, b: 110)
    /// train, val and test in every curve (matplotlib's first three).
    public static let train = Color(r: 31, g: 119, b: 180), val = Color(r: 255, g: 127, b: 14), test = Color(r: 44, g: 160, b: 44)
    /// A model's curve against a gray reference (chance, perfect calibration).
    public static let model = Color(r: 200, g: 30, b: 30), reference = Color(r: 160, g: 160, b: 160)
    public static let cell = Color(r: 31, g: 90, b: 160)
}

public enum TextAnchor: Sendable { case start, middle, end }

public enum Colormap: String, CaseIterable, Sendable {
    case jet, turbo, gray

    /// RGB in [0, 1] for t in [0, 1].
    public func rgb(_ t: Float) -> (Float, Float, Float) {
        let x = min(max(t, 0), 1)
        switch self {
        case .gray: return (x, x, x)
        case .jet:
            // MATLAB/OpenCV jet: piecewise-linear blue -> cyan -> yellow -> red.
            func f(_ v: Float) -> Float { min(max(1.5 - abs(4 * x - v), 0), 1) }
            return (f(3), f(2), f(1))
        case .turbo:
            // Turbo (Mikhailov 2019), polynomial approximation of the published map.
            let r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))))
            let g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))))
            let b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))))
            return (min(max(r, 0), 1), min(max(g, 0), 1), min(max(b, 0), 1))
        }
    }
}

/// An RGB canvas.
public struct Canvas {
    public let width: Int, height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, fill: UInt8 = 255) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: fill, count: width * height * 3)
    }

    public mutating func set(_ x: Int, _ y: Int, _ c: Color) {
        guard x >= 0 && x < width && y >= 0 && y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = c.r; pixels[i + 1] = c.g; pixels[i + 2] = c.b
    }

    public func color(_ x: Int, _ y: Int) -> Color {
        let i = (y * width + x) * 3
        return Color(r: pixels[i], g: pixels[i + 1], b: pixels[i + 2])
    }

    /// Pastes an RGB tile at (x0, y0).
    public mutating func paste(_ tile: [UInt8], width w: Int, height h: Int, at x0: Int, _ y0: Int) {
        for y in 0..<h { for x in 0..<w {
            let i = (y * w + x) * 3
            set(x0 + x, y0 + y, Color(r: tile[i], g: tile[i + 1], b: tile[i + 2]))
        } }
    }

    /// A line (Bresenham), 2 pixels wide unless `thickness` is 1; `dash` > 0
    /// draws `dash` pixels on, `dash` off.
    public mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Color, thickness: Int = 2, dash: Int = 0) {
        var x = x0, y = y0, step = 0
        let dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var err = dx + dy
        while true {
            if dash == 0 || (step / dash) % 2 == 0 {
                set(x, y, c)
                if thickness > 1 { set(x + 1, y, c); set(x, y + 1, c) }
            }
            step += 1
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    public mutating func fill(_ x: Int, _ y: Int, _ w: Int, _ h: Int, _ c: Color) {
        for yy in y..<(y + max(h, 0)) { for xx in x..<(x + max(w, 0)) { set(xx, yy, c) } }
    }

    /// The outline of a w x h box whose top-left pixel is (x, y).
    public mutating func rectangle(_ x: Int, _ y: Int, _ w: Int, _ h: Int, _ c: Color) {
        line(x, y, x + w, y, c, thickness: 1); line(x, y + h, x + w, y + h, c, thickness: 1)
        line(x, y, x, y + h, c, thickness: 1); line(x + w, y, x + w, y + h, c, thickness: 1)
    }

    /// Width in pixels of `s` in the bitmap font.
    public static func textWidth(_ s: String) -> Int { s.unicodeScalars.count * BitmapFont.width }

    /// Text in the bitmap font. Horizontal: `y` is the top of the line and
    /// `x` its start, middle or end by `anchor`. Vertical (read bottom to top,
    /// for a y-axis label): `x` is the left of the column, `y` its anchor.
    /// Characters outside printable ASCII draw as "?"; `bold` strikes twice,
    /// one pixel apart; `background` fills the text's box first.
    public mutating func text(_ s: String, x: Int, y: Int, color: Color = .axis, anchor: TextAnchor = .start, bold: Bool = false,
                              vertical: Bool = false, background: Color? = nil) {
        let w = Canvas.textWidth(s), h = BitmapFont.height
        let shift = anchor == .start ? 0 : anchor == .middle ? w / 2 : w
        if let bg = background {
            if vertical { fill(x - 1, y - w + shift - 1, h + 2, w + 2, bg) } else { fill(x - shift - 1, y - 1, w + 2, h + 2, bg) }
        }
        for (k, ch) in s.unicodeScalars.enumerated() {
            let code = ch.value >= 32 && ch.value < 127 ? Int(ch.value) : 63
            let glyph = BitmapFont.glyphs[code - 32]
            for (row, bits) in glyph.enumerated() where bits != 0 {
                for col in 0..<8 where bits & (0x80 >> UInt8(col)) != 0 {
                    let along = k * BitmapFont.width + col - shift
                    for b in 0...(bold ? 1 : 0) {
                        if vertical { set(x + row, y - along - b, color) } else { set(x + along + b, y + row, color) }
                    }
                }
            }
        }
    }

    public func image() -> RasterImage { RasterImage(width: width, height: height, channels: 3, pixels: pixels) }
    public func write(_ path: String) throws { try image().writePNG(path) }
}

/// A value in [0, 1] as a byte: clipped, NaN as 0 (a diverged map renders black, never traps).
@inline(__always) func byte(_ v: Float) -> UInt8 {
    guard v.isFinite else { return v == .infinity ? 255 : 0 }
    return UInt8(min(max(v, 0), 1) * 255 + 0.5)
}

/// A float map (row-major, h x w) as RGB through a colormap; values clipped to [lo, hi].
public func colorize(_ map: [Float], lo: Float = 0, hi: Float = 1, colormap: Colormap) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: map.count * 3)
    let s = hi > lo ? 1 / (hi - lo) : 1
    for (i, v) in map.enumerated() {
        let (r, g, b) = colormap.rgb((v - lo) * s)
        out[3 * i] = byte(r); out[3 * i + 1] = byte(g); out[3 * i + 2] = byte(b)
    }
    return out
}

/// CAM over a gray slice: (1 - alpha) * slice + alpha * colormap(cam).
public func overlay(gray: [Float], cam: [Float], alpha: Float = 0.45, colormap: Colormap = .jet) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: gray.count * 3)
    for i in 0..<gray.count {
        let (r, g, b) = colormap.rgb(cam[i])
        let v = gray[i]
        out[3 * i] = byte((1 - alpha) * v + alpha * r)
        out[3 * i + 1] = byte((1 - alpha) * v + alpha * g)
        out[3 * i + 2] = byte((1 - alpha) * v + alpha * b)
    }
    return out
}

/// Nearest-neighbour enlargement of an RGB tile.
public func enlarge(_ rgb: [UInt8], width: Int, height: Int, by k: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: width * k * height * k * 3)
    for y in 0..<(height * k) { for x in 0..<(width * k) { for c in 0..<3 {
        out[(y * width * k + x) * 3 + c] = rgb[((y / k) * width + x / k) * 3 + c]
    } } }
    return out
}

/// ROC curve points (FPR, TPR) from scores of class 1.
public func rocCurve(labels: [Int], scores: [Double]) -> [(Double, Double)] {
    let order = scores.indices.sorted { scores[$0] > scores[$1] }
    let pos = Double(labels.filter { $0 == 1 }.count), neg = Double(labels.count) - pos
    guard pos > 0 && neg > 0 else { return [] }
    var tp = 0.0, fp = 0.0
    var pts: [(Double, Double)] = [(0, 0)]
    for (k, i) in order.enumerated() {
        if labels[i] == 1 { tp += 1 } else { fp += 1 }
        if k + 1 == order.count || scores[order[k + 1]] != scores[i] { pts.append((fp / neg, tp / pos)) }
    }
    return pts
}
