import ArgumentParser

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ingest", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'ingest' is not built yet") }
}
