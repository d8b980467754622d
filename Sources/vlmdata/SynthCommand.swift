import ArgumentParser

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "synth", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'synth' is not built yet") }
}
