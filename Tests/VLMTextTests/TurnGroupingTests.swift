import Testing
@testable import VLMText
import VLMCore

/// `TurnGrouping.merge`: LLaVA-665K's layout, `<image>` once in the first human turn, every turn kept in order.
struct TurnGroupingTests {
    let first = [Turn(from: .human, value: "<image>\nWhat is this?"), Turn(from: .gpt, value: "A cat.")]
    let second = [Turn(from: .human, value: "How many cats?\n<image>"), Turn(from: .gpt, value: "One."),
                  Turn(from: .human, value: "Is it <image> asleep?"), Turn(from: .gpt, value: "Yes.")]

    @Test func laterConversationsLoseTheirImageAsPreprocessMultimodalDoes() {
        let turns = TurnGrouping.merge([first, second])
        #expect(turns.map(\.value) == ["<image>\nWhat is this?", "A cat.", "How many cats?", "One.", "Is it  asleep?", "Yes."])
        #expect(turns.map(\.from) == [.human, .gpt, .human, .gpt, .human, .gpt])
        #expect(throws: Never.self) { try Conversation(id: "k", image: "image", conversations: turns).validate() }
    }

    @Test func oneConversationIsKeptAsStored() {
        #expect(TurnGrouping.merge([second]) == second)
    }
}
