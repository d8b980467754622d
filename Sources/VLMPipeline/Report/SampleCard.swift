import Foundation
import VLMCore
import VLMShard
import VLMText

/// One sample of the report page: an element of class `sample` with the pixels as the model sees them, the boxes
/// the conversation names drawn over them, the conversation, and the tokens coloured by their label.
struct SampleCard {
    /// The PNG written beside the page: `tiles` tiles of `tileSide` px side by side.
    struct Image {
        var file: String
        var width: Int
        var height: Int
        var tileSide: Int
        var tiles: Int
    }

    var metadata: SampleMetadata
    var inputIDs: [Int32]
    var labels: [Int32]
    var image: Image?
    var tokenizer: (any TextTokenizer)?

    static let boxColours = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf"]

    func html() -> String {
        let m = metadata
        var s = "<section class=\"sample\" id=\"\(HTML.escape(m.key))\" data-key=\"\(HTML.escape(m.key))\">\n"
        s += "<h3>\(HTML.escape(m.key))</h3>\n"
        var facts = ["\(m.kind) · \(m.generator)", "\(m.template) · \(m.status)",
                     "\(m.length) ids, \(m.supervised) supervised, \(m.imageTokens) image tokens"]
        if let size = m.imageSize, size.count == 2 { facts.append("original \(size[0])×\(size[1])") }
        if let shape = m.pixelsShape { facts.append("pixels \(shape)") }
        if let grid = m.grid, grid.count == 2, grid != [1, 1] { facts.append("anyres grid \(grid[0])×\(grid[1])") }
        if let frame = m.boxFrame { facts.append("boxes in the \(frame) frame") }
        s += "<p class=\"meta\">\(HTML.escape(facts.joined(separator: " · ")))</p>\n"
        if let image {
            s += "<div class=\"pic\" style=\"width: \(image.width)px\">"
            s += "<img src=\"\(HTML.escape(image.file))\" width=\"\(image.width)\" height=\"\(image.height)\" alt=\"pixels of \(HTML.escape(m.key))\">"
            s += boxesSVG(image)
            s += "</div>\n"
        } else {
            s += "<div class=\"pic none\">text only</div>\n"
        }
        s += "<div class=\"conv\">\n"
        for turn in m.conversations {
            let from = turn["from"] ?? "?"
            s += "<p class=\"turn \(HTML.escape(from))\"><span class=\"from\">\(HTML.escape(from))</span>\(HTML.escape(turn["value"] ?? ""))</p>\n"
        }
        s += "</div>\n<div class=\"tokens\">"
        for (id, label) in zip(inputIDs, labels) {
            if id == -200 {
                s += "<span class=\"tok i\" title=\"&lt;image&gt;: \(m.imageTokens) image positions (id -200)\">&lt;image×\(m.imageTokens)&gt;</span>"
                continue
            }
            let piece = tokenizer?.token(id) ?? "#\(id)"
            let supervised = label != -100
            let title = "\(piece) · id \(id) · " + (supervised ? "supervised" : "masked")
            s += "<span class=\"tok \(supervised ? "s" : "m")\" title=\"\(HTML.escape(title))\">\(HTML.escape(Self.visible(piece)))</span>"
        }
        return s + "</div>\n</section>\n"
    }

    /// The boxes the conversation states, over the pixels: normalized `[x1, y1, x2, y2]` span the frame the sample
    /// json names (`box_frame`), which is the stored square of pad / crop / squash and anyres's base view (tile 0).
    func boxesSVG(_ image: Image) -> String {
        var boxes: [(turn: Int, box: [Double])] = []
        if metadata.boxFrame != nil {
            for (i, turn) in metadata.conversations.enumerated() {
                for box in Self.normalizedBoxes(in: turn["value"] ?? "") { boxes.append((i, box)) }
            }
        }
        var s = "<svg class=\"boxes\" viewBox=\"0 0 \(image.width) \(image.height)\" preserveAspectRatio=\"none\">"
        let side = Double(image.tileSide)
        for (n, item) in boxes.enumerated() {
            let b = item.box
            let colour = Self.boxColours[n % Self.boxColours.count]
            let (x, y, w, h) = (b[0] * side, b[1] * side, (b[2] - b[0]) * side, (b[3] - b[1]) * side)
            let text = "[" + b.map { String(format: "%.3g", $0) }.joined(separator: ", ") + "]"
            s += "<rect class=\"box\" x=\"\(Self.f(x))\" y=\"\(Self.f(y))\" width=\"\(Self.f(w))\" height=\"\(Self.f(h))\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"\(Self.f(max(side / 160, 1.5)))\"><title>\(HTML.escape(text))</title></rect>"
        }
        return s + "</svg>"
    }

    static func f(_ v: Double) -> String { String(format: "%.2f", v) }

    /// Every `[a, b, c, d]` in `text` with four numbers in [0, 1], a ≤ c and b ≤ d: LLaVA's normalized boxes.
    static func normalizedBoxes(in text: String) -> [[Double]] {
        var out: [[Double]] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "[") {
            let after = rest[rest.index(after: open)...]
            guard let close = after.firstIndex(of: "]") else { break }
            let numbers = after[..<close].split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            if numbers.count == 4, numbers.allSatisfy({ $0 != nil && (0...1).contains($0!) }) {
                let b = numbers.map { $0! }
                if b[0] <= b[2], b[1] <= b[3] { out.append(b) }
            }
            rest = after
        }
        return out
    }

    /// A token piece as shown in the row: SentencePiece's word mark as a space, a newline as ⏎.
    static func visible(_ piece: String) -> String {
        if piece == "<0x0A>" { return "⏎" }
        return piece.replacingOccurrences(of: "▁", with: " ").replacingOccurrences(of: "Ġ", with: " ")
            .replacingOccurrences(of: "\n", with: "⏎").replacingOccurrences(of: "Ċ", with: "⏎")
    }
}
