import Foundation

/// The report's charts as inline SVG, drawn here (no plotting library, no script): a histogram of integers and a
/// line chart.
///
/// ```swift
/// let svg = SVGChart.histogram([3, 5, 5, 8], title: "tokens per sample", xLabel: "tokens")
/// ```
enum SVGChart {
    static let width = 420.0, height = 230.0
    static let left = 50.0, right = 14.0, top = 28.0, bottom = 40.0

    /// Bars over equal-width integer bins (at most `maxBins`), count on the y axis, the range and median in the title.
    static func histogram(_ values: [Int], title: String, xLabel: String, maxBins: Int = 30) -> String {
        guard let low = values.min(), let high = values.max() else { return empty(title) }
        let span = high - low + 1
        let binWidth = max(1, Int((Double(span) / Double(maxBins)).rounded(.up)))
        let bins = (span + binWidth - 1) / binWidth
        var counts = [Int](repeating: 0, count: bins)
        for v in values { counts[(v - low) / binWidth] += 1 }
        let peak = counts.max()!
        let sorted = values.sorted()
        let median = sorted[(sorted.count - 1) / 2]
        let plotW = width - left - right, plotH = height - top - bottom
        let barW = plotW / Double(bins)
        var s = header(title: "\(title) (n \(values.count), min \(low), median \(median), max \(high))")
        for (i, c) in counts.enumerated() where c > 0 {
            let h = plotH * Double(c) / Double(peak)
            let from = low + i * binWidth, to = from + binWidth - 1
            let range = binWidth == 1 ? "\(from)" : "\(from)–\(to)"
            s += "<rect class=\"bar\" x=\"\(f(left + Double(i) * barW + 0.5))\" y=\"\(f(top + plotH - h))\" width=\"\(f(max(barW - 1, 0.5)))\" height=\"\(f(h))\" fill=\"#4e79a7\"><title>\(range): \(c)</title></rect>\n"
        }
        s += axes(xLabel: xLabel, yLabel: "count")
        s += tick(x: left, label: "\(low)", anchor: "start")
        s += tick(x: width - right, label: "\(low + bins * binWidth - 1)", anchor: "end")
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + 4))\" text-anchor=\"end\">\(peak)</text>\n"
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + plotH))\" text-anchor=\"end\">0</text>\n"
        return s + "</svg>\n"
    }

    /// A line through `points` (x ascending), with a moving average of `smooth` points drawn over it.
    static func line(_ points: [(x: Double, y: Double)], title: String, xLabel: String, yLabel: String, smooth: Int = 25) -> String {
        let finite = points.filter { $0.x.isFinite && $0.y.isFinite }
        guard let first = finite.first, let last = finite.last else { return empty(title) }
        let minY = min(0, finite.map { $0.y }.min()!), maxY = max(finite.map { $0.y }.max()! * 1.05, minY + 1e-9)
        let spanX = max(last.x - first.x, 1e-9)
        let plotW = width - left - right, plotH = height - top - bottom
        func px(_ x: Double) -> Double { left + plotW * (x - first.x) / spanX }
        func py(_ y: Double) -> Double { top + plotH * (1 - (y - minY) / (maxY - minY)) }
        func path(_ p: [(x: Double, y: Double)]) -> String {
            p.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(f(px($0.element.x))),\(f(py($0.element.y)))" }.joined(separator: " ")
        }
        var averaged: [(x: Double, y: Double)] = []
        var sum = 0.0
        for (i, p) in finite.enumerated() {
            sum += p.y
            if i >= smooth { sum -= finite[i - smooth].y }
            averaged.append((p.x, sum / Double(min(i + 1, smooth))))
        }
        var s = header(title: title + String(format: " (%.3f → %.3f)", first.y, averaged.last!.y))
        s += "<path d=\"\(path(finite))\" fill=\"none\" stroke=\"#bbb\" stroke-width=\"1\"/>\n"
        s += "<path class=\"curve\" d=\"\(path(averaged))\" fill=\"none\" stroke=\"#e15759\" stroke-width=\"2\"/>\n"
        s += axes(xLabel: xLabel, yLabel: yLabel)
        s += tick(x: left, label: number(first.x), anchor: "start")
        s += tick(x: width - right, label: number(last.x), anchor: "end")
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + 4))\" text-anchor=\"end\">\(number(maxY))</text>\n"
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(top + plotH))\" text-anchor=\"end\">\(number(minY))</text>\n"
        return s + "</svg>\n"
    }

    private static func header(title: String) -> String {
        "<svg class=\"chart\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
            + "<text x=\"\(f(width / 2))\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">\(HTML.escape(title))</text>\n"
    }

    private static func empty(_ title: String) -> String {
        header(title: title) + "<text x=\"\(f(width / 2))\" y=\"\(f(height / 2))\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n</svg>\n"
    }

    private static func axes(xLabel: String, yLabel: String) -> String {
        let bottomY = height - bottom
        return "<path d=\"M\(f(left)),\(f(top)) L\(f(left)),\(f(bottomY)) L\(f(width - right)),\(f(bottomY))\" fill=\"none\" stroke=\"#333\"/>\n"
            + "<text x=\"\(f(left + (width - left - right) / 2))\" y=\"\(f(height - 6))\" text-anchor=\"middle\">\(HTML.escape(xLabel))</text>\n"
            + "<text x=\"12\" y=\"\(f(top + (height - top - bottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 12 \(f(top + (height - top - bottom) / 2)))\">\(HTML.escape(yLabel))</text>\n"
    }

    private static func tick(x: Double, label: String, anchor: String) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(height - bottom + 14))\" text-anchor=\"\(anchor)\">\(HTML.escape(label))</text>\n"
    }

    private static func number(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(format: "%.3g", v)
    }

    private static func f(_ v: Double) -> String { String(format: "%.1f", v) }
}

/// Escaping for text and attribute values in the report page.
enum HTML {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
