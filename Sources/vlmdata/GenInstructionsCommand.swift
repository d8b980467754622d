import ArgumentParser

struct GenInstructionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gen-instructions", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'gen-instructions' is not built yet") }
}
