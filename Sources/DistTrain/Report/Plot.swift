import Foundation

/// A line plot described once and drawn two ways: `svg` for the HTML report
/// (vector, selectable text, a tooltip per point) and `canvas` for PNG files
/// (text in the built-in bitmap font). Both carry the title, the axis labels,
/// round tick values, a legend under the title and an optional marked x
/// (the best epoch); the layout is the same `Frame`.
struct Plot {
    struct Series {
        var name: String
        var color: Color
        var points: [(Double, Double)]
    }

    var title: String
    var xLabel: String, yLabel: String
    var series: [Series]
    var xRange: (Double, Double)? = nil
    var yRange: (Double, Double)? = nil
    /// A vertical dashed line and its label.
    var marker: (x: Double, label: String)? = nil
    var width = 480, height = 320

    /// The plot area inside the picture and the data ranges it maps.
    struct Frame {
        static let left = 60.0, right = 16.0, top = 46.0, bottom = 44.0
        var x0: Double, x1: Double, y0: Double, y1: Double
        var pw: Double, ph: Double
        func px(_ x: Double) -> Double { Frame.left + (x - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { Frame.top + ph - (min(max(y, y0), y1) - y0) / (y1 - y0) * ph }
        var xTicks: [Double] { Plot.ticks(x0, x1) }
        var yTicks: [Double] { Plot.ticks(y0, y1) }
    }

    var frame: Frame {
        let all = series.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        let xmin = all.map(\.0).min() ?? 0
        let (x0, x1) = xRange ?? (xmin, max(all.map(\.0).max() ?? 1, xmin + 1))
        var (y0, y1) = yRange ?? (min(all.map(\.1).min() ?? 0, 0), all.map(\.1).max() ?? 1)
        if y1 <= y0 { y1 = y0 + 1 }
        return Frame(x0: x0, x1: x1, y0: y0, y1: y1, pw: Double(width) - Frame.left - Frame.right,
                     ph: Double(height) - Frame.top - Frame.bottom)
    }

    /// The points that can be drawn (NaN and infinity left out).
    static func finite(_ s: Series) -> [(Double, Double)] { s.points.filter { $0.0.isFinite && $0.1.isFinite } }

    /// About `count` round tick values covering lo...hi (1, 2 or 5 times a power of ten apart).
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / Double(count), p = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * p }.first { $0 >= raw } ?? 10 * p
        // k * step, rounded to the step's decimals (no 0.6000000000000001 from accumulating).
        let decimals = max(0, -Int(floor(log10(step))) + 1), scale = pow(10, Double(decimals))
        var out: [Double] = []
        var k = (lo / step).rounded(.up)
        while k * step <= hi + step * 1e-9 { out.append((k * step * scale).rounded() / scale); k += 1 }
        return out
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        return String(format: abs(v) >= 10 ? "%.1f" : abs(v) >= 1 ? "%.2f" : "%.3g", v)
    }

    /// The legend's entries left to right: (x of the swatch, series), centred on the picture.
    func legend(textWidth: (String) -> Double) -> [(x: Double, series: Series)] {
        let widths = series.map { 14 + textWidth($0.name) + 14 }
        var x = (Double(width) - widths.reduce(0, +)) / 2
        return zip(widths, series).map { w, s in defer { x += w }; return (x, s) }
    }

    var svg: String {
        let fr = frame, left = Frame.left, top = Frame.top
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
            + "font-family=\"sans-serif\" font-size=\"11\">"
        s += "<text x=\"\(f(Double(width) / 2))\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">"
            + "\(htmlEscape(title))</text>"
        for (x, line) in legend(textWidth: { Double($0.count) * 6.2 }) {
            s += "<rect x=\"\(f(x))\" y=\"24\" width=\"10\" height=\"10\" fill=\"\(line.color.hex)\"/>"
            s += "<text x=\"\(f(x + 14))\" y=\"33\">\(htmlEscape(line.name))</text>"
        }
        for t in fr.yTicks {
            s += "<line x1=\"\(f(left))\" x2=\"\(f(left + fr.pw))\" y1=\"\(f(fr.py(t)))\" y2=\"\(f(fr.py(t)))\" stroke=\"#e5e5e5\"/>"
            s += "<text x=\"\(f(left - 4))\" y=\"\(f(fr.py(t) + 4))\" text-anchor=\"end\">\(Plot.label(t))</text>"
        }
        for t in fr.xTicks {
            s += "<line x1=\"\(f(fr.px(t)))\" x2=\"\(f(fr.px(t)))\" y1=\"\(f(top))\" y2=\"\(f(top + fr.ph))\" stroke=\"#f0f0f0\"/>"
            s += "<text x=\"\(f(fr.px(t)))\" y=\"\(f(top + fr.ph + 14))\" text-anchor=\"middle\">\(Plot.label(t))</text>"
        }
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(fr.pw))\" height=\"\(f(fr.ph))\" fill=\"none\" stroke=\"#333\"/>"
        s += "<text x=\"\(f(left + fr.pw / 2))\" y=\"\(Double(height) - 8)\" text-anchor=\"middle\">\(htmlEscape(xLabel))</text>"
        s += "<text transform=\"translate(14 \(f(top + fr.ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(htmlEscape(yLabel))</text>"
        if let m = marker, m.x.isFinite {
            s += "<line x1=\"\(f(fr.px(m.x)))\" x2=\"\(f(fr.px(m.x)))\" y1=\"\(f(top))\" y2=\"\(f(top + fr.ph))\" stroke=\"#888\" "
                + "stroke-dasharray=\"4 3\"/>"
            let nearRight = fr.px(m.x) > left + fr.pw - 90  // the label goes left of the line there
            s += "<text x=\"\(f(fr.px(m.x) + (nearRight ? -3 : 3)))\" y=\"\(f(top + fr.ph / 2))\" "
                + "text-anchor=\"\(nearRight ? "end" : "start")\" fill=\"#555\">\(htmlEscape(m.label))</text>"
        }
        for line in series {
            let pts = Plot.finite(line)
            s += "<polyline fill=\"none\" stroke=\"\(line.color.hex)\" stroke-width=\"1.8\" points=\""
                + pts.map { "\(f(fr.px($0.0))),\(f(fr.py($0.1)))" }.joined(separator: " ") + "\"/>"
            guard pts.count <= 200 else { continue }
            for p in pts {
                s += "<circle cx=\"\(f(fr.px(p.0)))\" cy=\"\(f(fr.py(p.1)))\" r=\"2.5\" fill=\"\(line.color.hex)\"><title>"
                    + htmlEscape("\(line.name): \(Plot.label(p.0)), \(String(format: "%.4f", p.1))") + "</title></circle>"
            }
        }
        return s + "</svg>"
    }

    /// The same picture as pixels, for the PNG files.
    var canvas: Canvas {
        let fr = frame, left = Int(Frame.left), top = Int(Frame.top), pw = Int(fr.pw), ph = Int(fr.ph)
        var c = Canvas(width: width, height: height)
        func ix(_ x: Double) -> Int { Int(fr.px(x).rounded()) }
        func iy(_ y: Double) -> Int { Int(fr.py(y).rounded()) }
        c.text(title, x: width / 2, y: 3, anchor: .middle, bold: true)
        for (x, line) in legend(textWidth: { Double(Canvas.textWidth($0)) }) {
            c.fill(Int(x), 23, 10, 10, line.color)
            c.text(line.name, x: Int(x) + 14, y: 21)
        }
        for t in fr.yTicks {
            c.line(left, iy(t), left + pw, iy(t), .grid, thickness: 1)
            c.text(Plot.label(t), x: left - 5, y: iy(t) - BitmapFont.height / 2, anchor: .end)
        }
        for t in fr.xTicks {
            c.line(ix(t), top, ix(t), top + ph, .grid, thickness: 1)
            c.text(Plot.label(t), x: ix(t), y: top + ph + 4, anchor: .middle)
        }
        c.rectangle(left, top, pw, ph, .axis)
        c.text(xLabel, x: left + pw / 2, y: height - 4 - BitmapFont.height, anchor: .middle)
        c.text(yLabel, x: 6, y: top + ph / 2, anchor: .middle, vertical: true)
        if let m = marker, m.x.isFinite {
            c.line(ix(m.x), top, ix(m.x), top + ph, .marker, thickness: 1, dash: 4)
            let nearRight = ix(m.x) > left + pw - 90
            c.text(m.label, x: ix(m.x) + (nearRight ? -4 : 4), y: top + ph / 2 - BitmapFont.height / 2, color: .marker,
                   anchor: nearRight ? .end : .start, background: .white)
        }
        for line in series {
            let pts = Plot.finite(line)
            for i in pts.indices.dropFirst() { c.line(ix(pts[i - 1].0), iy(pts[i - 1].1), ix(pts[i].0), iy(pts[i].1), line.color) }
            guard pts.count <= 200 else { continue }
            for p in pts { c.fill(ix(p.0) - 2, iy(p.1) - 2, 5, 5, line.color) }
        }
        return c
    }
}

/// A confusion matrix as a labelled heat map: rows the true class, columns the
/// predicted one, each cell its count and its share of the row (shade).
struct ConfusionPlot {
    var title: String
    var classNames: [String]
    var counts: [[Int]]
    var cell = 92

    private var n: Int { counts.count }
    private var rowLabelWidth: Int { max(60, (classNames.map { Canvas.textWidth($0) }.max() ?? 0) + 12) }
    var width: Int { 24 + rowLabelWidth + n * cell + 16 }
    var height: Int { 44 + n * cell + 40 }

    private func name(_ k: Int) -> String { classNames.indices.contains(k) ? classNames[k] : "\(k)" }

    /// Row share and the cell's colour (white to the model colour by share).
    private func shade(_ i: Int, _ j: Int) -> (share: Double, fill: Color, ink: Color) {
        let total = counts[i].reduce(0, +), share = total > 0 ? Double(counts[i][j]) / Double(total) : 0
        let mix = { (a: UInt8) in UInt8(255 - (255 - Double(a)) * share) }
        let base = Color.cell
        return (share, Color(r: mix(base.r), g: mix(base.g), b: mix(base.b)), share > 0.55 ? .white : .axis)
    }

    var svg: String {
        let x0 = 24 + rowLabelWidth, y0 = 44
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
            + "font-family=\"sans-serif\" font-size=\"12\">"
        s += "<text x=\"\(width / 2)\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(htmlEscape(title))</text>"
        s += "<text x=\"\(x0 + n * cell / 2)\" y=\"36\" text-anchor=\"middle\">predicted</text>"
        s += "<text transform=\"translate(14 \(y0 + n * cell / 2)) rotate(-90)\" text-anchor=\"middle\">true</text>"
        for i in 0..<n {
            s += "<text x=\"\(x0 - 6)\" y=\"\(y0 + i * cell + cell / 2 + 4)\" text-anchor=\"end\">\(htmlEscape(name(i)))</text>"
            s += "<text x=\"\(x0 + i * cell + cell / 2)\" y=\"\(y0 + n * cell + 16)\" text-anchor=\"middle\">\(htmlEscape(name(i)))</text>"
            for j in 0..<n {
                let (share, fill, ink) = shade(i, j)
                s += "<rect x=\"\(x0 + j * cell)\" y=\"\(y0 + i * cell)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"\(fill.hex)\" "
                    + "stroke=\"#333\"><title>\(htmlEscape("true \(name(i)), predicted \(name(j)): \(counts[i][j])"))</title></rect>"
                s += "<text x=\"\(x0 + j * cell + cell / 2)\" y=\"\(y0 + i * cell + cell / 2)\" text-anchor=\"middle\" "
                    + "fill=\"\(ink.hex)\" font-size=\"16\">\(counts[i][j])</text>"
                s += "<text x=\"\(x0 + j * cell + cell / 2)\" y=\"\(y0 + i * cell + cell / 2 + 16)\" text-anchor=\"middle\" "
                    + "fill=\"\(ink.hex)\">\(String(format: "%.1f %%", 100 * share))</text>"
            }
        }
        return s + "</svg>"
    }

    var canvas: Canvas {
        let x0 = 24 + rowLabelWidth, y0 = 44, h = BitmapFont.height
        var c = Canvas(width: width, height: height)
        c.text(title, x: width / 2, y: 3, anchor: .middle, bold: true)
        c.text("predicted", x: x0 + n * cell / 2, y: 24, anchor: .middle)
        c.text("true", x: 6, y: y0 + n * cell / 2, anchor: .middle, vertical: true)
        for i in 0..<n {
            c.text(name(i), x: x0 - 6, y: y0 + i * cell + cell / 2 - h / 2, anchor: .end)
            c.text(name(i), x: x0 + i * cell + cell / 2, y: y0 + n * cell + 6, anchor: .middle)
            for j in 0..<n {
                let (share, fill, ink) = shade(i, j)
                c.fill(x0 + j * cell, y0 + i * cell, cell, cell, fill)
                c.rectangle(x0 + j * cell, y0 + i * cell, cell, cell, .axis)
                c.text("\(counts[i][j])", x: x0 + j * cell + cell / 2, y: y0 + i * cell + cell / 2 - h, color: ink, anchor: .middle,
                       bold: true)
                c.text(String(format: "%.1f %%", 100 * share), x: x0 + j * cell + cell / 2, y: y0 + i * cell + cell / 2 + 2,
                       color: ink, anchor: .middle)
            }
        }
        return c
    }
}
