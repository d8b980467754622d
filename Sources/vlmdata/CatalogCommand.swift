import ArgumentParser

struct CatalogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "catalog", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'catalog' is not built yet") }
}
