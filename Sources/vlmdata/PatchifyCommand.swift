import ArgumentParser

struct PatchifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "patchify", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'patchify' is not built yet") }
}
