import ArgumentParser

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenizer", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'tokenizer' is not built yet") }
}
