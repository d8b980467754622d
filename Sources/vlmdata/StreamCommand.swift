import ArgumentParser

struct StreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stream", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'stream' is not built yet") }
}
