import Foundation

/// Line plots as inline SVG for the HTML report: title, axis labels, tick
/// values, a legend, an optional marked x (the best epoch), and a tooltip
/// (`<title>`) on every point. Text is text: selectable, scalable.
struct SVGPlot {
    struct Series {
        var name: String
        var color: String
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

    var svg: String {
        let all = series.flatMap(\.points).filter { $0.0.isFinite && $0.1.isFinite }
        let (x0, x1) = xRange ?? ((all.map(\.0).min() ?? 0), max(all.map(\.0).max() ?? 1, (all.map(\.0).min() ?? 0) + 1))
        var (y0, y1) = yRange ?? (min(all.map(\.1).min() ?? 0, 0), all.map(\.1).max() ?? 1)
        if y1 <= y0 { y1 = y0 + 1 }
        let left = 56.0, right = 16.0, top = 30.0, bottom = 44.0
        let pw = Double(width) - left - right, ph = Double(height) - top - bottom
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { top + ph - (min(max(y, y0), y1) - y0) / (y1 - y0) * ph }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" "
            + "font-family=\"sans-serif\" font-size=\"11\">"
        s += "<text x=\"\(f(Double(width) / 2))\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">"
            + "\(htmlEscape(title))</text>"
        for t in SVGPlot.ticks(y0, y1) {
            s += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(py(t)))\" y2=\"\(f(py(t)))\" stroke=\"#e5e5e5\"/>"
            s += "<text x=\"\(f(left - 4))\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\">\(SVGPlot.label(t))</text>"
        }
        for t in SVGPlot.ticks(x0, x1) {
            s += "<line x1=\"\(f(px(t)))\" x2=\"\(f(px(t)))\" y1=\"\(f(top))\" y2=\"\(f(top + ph))\" stroke=\"#f0f0f0\"/>"
            s += "<text x=\"\(f(px(t)))\" y=\"\(f(top + ph + 14))\" text-anchor=\"middle\">\(SVGPlot.label(t))</text>"
        }
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#333\"/>"
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(Double(height) - 8)\" text-anchor=\"middle\">\(htmlEscape(xLabel))</text>"
        s += "<text transform=\"translate(14 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(htmlEscape(yLabel))</text>"
        if let m = marker, m.x.isFinite {
            s += "<line x1=\"\(f(px(m.x)))\" x2=\"\(f(px(m.x)))\" y1=\"\(f(top))\" y2=\"\(f(top + ph))\" stroke=\"#888\" "
                + "stroke-dasharray=\"4 3\"/>"
            let nearRight = px(m.x) > left + pw - 90  // the label goes left of the line there
            s += "<text x=\"\(f(px(m.x) + (nearRight ? -3 : 3)))\" y=\"\(f(top + ph - 6))\" text-anchor=\"\(nearRight ? "end" : "start")\" "
                + "fill=\"#555\">\(htmlEscape(m.label))</text>"
        }
        for (k, line) in series.enumerated() {
            let pts = line.points.filter { $0.0.isFinite && $0.1.isFinite }
            s += "<polyline fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"1.8\" points=\""
                + pts.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ") + "\"/>"
            if pts.count <= 200 {
                for p in pts {
                    s += "<circle cx=\"\(f(px(p.0)))\" cy=\"\(f(py(p.1)))\" r=\"2.5\" fill=\"\(line.color)\"><title>"
                        + htmlEscape("\(line.name): \(SVGPlot.label(p.0)), \(String(format: "%.4f", p.1))") + "</title></circle>"
                }
            }
            let ly = top + 14 + Double(k) * 14
            s += "<rect x=\"\(f(left + pw - 96))\" y=\"\(f(ly - 8))\" width=\"10\" height=\"10\" fill=\"\(line.color)\"/>"
            s += "<text x=\"\(f(left + pw - 82))\" y=\"\(f(ly + 1))\">\(htmlEscape(line.name))</text>"
        }
        return s + "</svg>"
    }
}
