import Foundation

// Rendering: colormaps, overlays, grids and simple line plots, as RGB8
// images written through libpng. Labels and numbers live in the HTML around
// the pictures (ReportPage.swift), not in the pixels.

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

    public mutating func set(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
        guard x >= 0 && x < width && y >= 0 && y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = c.0; pixels[i + 1] = c.1; pixels[i + 2] = c.2
    }

    /// Pastes an RGB tile at (x0, y0).
    public mutating func paste(_ tile: [UInt8], width w: Int, height h: Int, at x0: Int, _ y0: Int) {
        for y in 0..<h { for x in 0..<w {
            let i = (y * w + x) * 3
            set(x0 + x, y0 + y, (tile[i], tile[i + 1], tile[i + 2]))
        } }
    }

    /// A line with 2-pixel width (Bresenham).
    public mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8)) {
        var x = x0, y = y0
        let dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var err = dx + dy
        while true {
            set(x, y, c); set(x + 1, y, c); set(x, y + 1, c)
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
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

/// Tiles of equal size in rows x columns with a gap.
public func grid(_ tiles: [[UInt8]], tileWidth: Int, tileHeight: Int, columns: Int, gap: Int = 4) -> Canvas {
    let rows = (tiles.count + columns - 1) / columns
    var c = Canvas(width: columns * (tileWidth + gap) + gap, height: rows * (tileHeight + gap) + gap)
    for (k, t) in tiles.enumerated() {
        c.paste(t, width: tileWidth, height: tileHeight,
                at: gap + (k % columns) * (tileWidth + gap), gap + (k / columns) * (tileHeight + gap))
    }
    return c
}

/// Nearest-neighbour enlargement of an RGB tile.
public func enlarge(_ rgb: [UInt8], width: Int, height: Int, by k: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: width * k * height * k * 3)
    for y in 0..<(height * k) { for x in 0..<(width * k) { for c in 0..<3 {
        out[(y * width * k + x) * 3 + c] = rgb[((y / k) * width + x / k) * 3 + c]
    } } }
    return out
}

/// Line plot: series (x, y) each in its colour, axes from the data (y from 0
/// when all values are non-negative), light grid at 5 ticks; no text.
public func linePlot(_ series: [(points: [(Double, Double)], color: (UInt8, UInt8, UInt8))], width: Int = 480, height: Int = 300,
                     yRange: (Double, Double)? = nil) -> Canvas {
    var c = Canvas(width: width, height: height)
    let all = series.flatMap(\.points).filter { $0.1.isFinite }
    guard !all.isEmpty else { return c }
    let xs = all.map(\.0), ys = all.map(\.1)
    let x0 = xs.min()!, x1 = max(xs.max()!, x0 + 1)
    var (y0, y1) = yRange ?? (min(ys.min()!, 0), ys.max()!)
    if y1 <= y0 { y1 = y0 + 1 }
    let m = 12
    func px(_ x: Double) -> Int { m + Int((x - x0) / (x1 - x0) * Double(width - 2 * m)) }
    func py(_ y: Double) -> Int { height - m - Int((min(max(y, y0), y1) - y0) / (y1 - y0) * Double(height - 2 * m)) }
    for k in 0...4 {
        let gy = m + k * (height - 2 * m) / 4, gx = m + k * (width - 2 * m) / 4
        c.line(m, gy, width - m, gy, (225, 225, 225)); c.line(gx, m, gx, height - m, (225, 225, 225))
    }
    c.line(m, height - m, width - m, height - m, (0, 0, 0)); c.line(m, m, m, height - m, (0, 0, 0))
    for s in series {
        let pts = s.points.filter { $0.1.isFinite }
        for i in 1..<max(pts.count, 1) { c.line(px(pts[i - 1].0), py(pts[i - 1].1), px(pts[i].0), py(pts[i].1), s.color) }
        for p in pts { for dy in -2...2 { for dx in -2...2 { c.set(px(p.0) + dx, py(p.1) + dy, s.color) } } }
    }
    return c
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

public let seriesColors: [String: (UInt8, UInt8, UInt8)] = ["train": (31, 119, 180), "val": (255, 127, 14), "test": (44, 160, 44)]
