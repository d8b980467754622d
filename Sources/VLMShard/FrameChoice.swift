import VLMCore

/// Which instructions that record a box frame (`instructions.meta.box_frame`) go beside pixels of one frame.
///
/// Several frames can coexist in one workspace (`gen-instructions --box-frame` run again with another frame adds
/// rows, the frame being part of their keys). For each (generator, kind) the plan keeps the instructions made for
/// the pixels' frame; failing those, the ones made for the whole image (`original`) when they state no box and the
/// pixels are padded (a pad cuts nothing, so counts and presence hold); when a kind has neither, shard refuses,
/// naming the frames, since its boxes would point at the wrong place in what the model sees. In a grouped
/// tokenization every sample (a group, or an instruction on its own) is in one class, "grouped/turns": tokenize
/// groups per frame when the workspace holds several, with the frameless instructions apart, so no sample joins
/// two frames.
///
/// The choice is made over every row of the chosen tokenize and pixel configs, also when shard runs one part
/// (`--part I/N`): rows of other parts are noted with no plan index. So each part keeps exactly the rows the
/// whole run keeps, whichever images a part happens to hold.
///
/// ```swift
/// var frames = FrameChoice(pixelFrame: .pad)
/// frames.note(0, key: "a-tpl-grounding-0", generator: "templates", kind: "grounding", stated: .original, statesBox: true)
/// frames.note(1, key: "a-tpl-grounding-0-pad", generator: "templates", kind: "grounding", stated: .pad, statesBox: true)
/// let dropped = try frames.dropped(catalogPath: "ws/catalog.sqlite", pixelsConfig: "pix")   // [0]
/// ```
struct FrameChoice {
    /// The frame of the pixels (nil when there are none: text-only plans check nothing).
    let pixelFrame: BoxFrame?

    private struct Noted {
        /// The plan item, or nil for a row of another part (it counts in the choice but is not planned).
        var index: Int?
        var key: String
        var stated: BoxFrame?
        var statesBox: Bool
    }

    private var byKind: [String: [Noted]] = [:]
    private var kindOrder: [String] = []

    init(pixelFrame: BoxFrame?) {
        self.pixelFrame = pixelFrame
    }

    /// Records plan item `index` (nil: a row of another part), whose instruction states `stated` as its frame.
    mutating func note(_ index: Int?, key: String, generator: String, kind: String, stated: BoxFrame?, statesBox: Bool) {
        let group = "\(generator)/\(kind)"
        if byKind[group] == nil { kindOrder.append(group) }
        byKind[group, default: []].append(Noted(index: index, key: key, stated: stated, statesBox: statesBox))
    }

    /// True when an instruction's metadata (or one of its turns') holds a box.
    static func statesBox(_ meta: [String: Any]?) -> Bool {
        guard let meta else { return false }
        if meta["box"] != nil || meta["states_box"] as? Bool == true { return true }
        if let turns = meta["turns"] as? [[String: Any]] { return turns.contains { statesBox($0) } }
        return false
    }

    /// The plan indices to leave out (instructions of another frame where the kind has ones for these pixels);
    /// throws when a kind has none made for them.
    func dropped(catalogPath: String, pixelsConfig: String?) throws -> Set<Int> {
        guard let pixelFrame else { return [] }
        var out = Set<Int>()
        var refused: [Noted] = []
        var refusedCount = 0
        for group in kindOrder {
            let noted = byKind[group]!
            let exact = noted.filter { $0.stated == pixelFrame }
            let whole = noted.filter { $0.stated == .original && !$0.statesBox && pixelFrame == .pad }
            let kept = !exact.isEmpty ? exact : whole
            if kept.isEmpty {
                refusedCount += noted.count
                refused += noted.prefix(3 - min(3, refused.count))
                continue
            }
            let keep = Set(kept.compactMap(\.index))
            for n in noted { if let index = n.index, !keep.contains(index) { out.insert(index) } }
        }
        guard refusedCount == 0 else {
            let examples = refused.map { "\($0.key): boxes in the \($0.stated?.rawValue ?? "unknown") frame, pixels need \(pixelFrame.rawValue)" }
            throw VLMError(.conflict, file: catalogPath, record: "pixels config \(pixelsConfig ?? "-")",
                           "\(refusedCount) instructions state boxes in another frame than the pixels show, "
                           + "e.g. \(examples.joined(separator: "; ")); generate them with --box-frame \(pixelFrame.rawValue) "
                           + "or patchify in the matching --mode")
        }
        return out
    }
}
