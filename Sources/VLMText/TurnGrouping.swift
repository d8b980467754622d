import VLMCore

/// Several conversations about one image as one multi-turn conversation, the way LLaVA's 665K instruction mix is
/// built: the turns in order, `<image>` only in the first human turn.
///
/// The first conversation is kept as stored; every later one loses its `<image>` as LLaVA's
/// `preprocess_multimodal` would remove it (the placeholder taken out, the text stripped), so the masker sees one
/// image and each answer stays an assistant turn of its own.
///
/// ```swift
/// let turns = TurnGrouping.merge([[q1, a1], [q2, a2, q3, a3]])   // 6 turns, "<image>" only in q1
/// let sample = try masker.tokenize(Conversation(id: key, image: "image", conversations: turns))
/// ```
public enum TurnGrouping {
    public static func merge(_ conversations: [[Turn]]) -> [Turn] {
        var out: [Turn] = []
        for (index, turns) in conversations.enumerated() {
            if index == 0 {
                out += turns
                continue
            }
            out += turns.map { turn in
                guard turn.value.occurrences(of: Conversation.imagePlaceholder) > 0 else { return turn }
                return Turn(from: turn.from, value: pythonStrip(pythonSplit(turn.value, Conversation.imagePlaceholder).joined()))
            }
        }
        return out
    }
}
