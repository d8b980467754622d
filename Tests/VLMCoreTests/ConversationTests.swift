import Testing
import VLMCore

@Test func validConversationPasses() throws {
    let c = Conversation(id: "a", image: "x.jpg", conversations: [
        Turn(from: .human, value: "<image>\nWhat is this?"), Turn(from: .gpt, value: "A cat."),
    ])
    try c.validate()
}

@Test func imagePlaceholderRules() {
    let twice = Conversation(id: "b", image: "x.jpg", conversations: [
        Turn(from: .human, value: "<image> <image>"), Turn(from: .gpt, value: "x"),
    ])
    #expect(throws: VLMError.self) { try twice.validate() }
    let misplaced = Conversation(id: "c", image: "x.jpg", conversations: [
        Turn(from: .human, value: "hi"), Turn(from: .gpt, value: "<image>"),
    ])
    #expect(throws: VLMError.self) { try misplaced.validate() }
    let textOnly = Conversation(id: "d", conversations: [Turn(from: .human, value: "<image>"), Turn(from: .gpt, value: "x")])
    #expect(throws: VLMError.self) { try textOnly.validate() }
    let wrongOrder = Conversation(id: "e", conversations: [Turn(from: .gpt, value: "a"), Turn(from: .human, value: "b")])
    #expect(throws: VLMError.self) { try wrongOrder.validate() }
}

@Test func keysHaveNoDots() {
    #expect(SampleKey.sanitize("train2017/000000000139.jpg") == "train2017_000000000139_jpg")
    #expect(!SampleKey.sanitize("a.b.c").contains("."))
}

@Test func boxNormalization() {
    let box = Box(x: 10, y: 20, width: 30, height: 40)
    #expect(box.normalized(imageWidth: 100, imageHeight: 200) == [0.1, 0.1, 0.4, 0.3])
}
