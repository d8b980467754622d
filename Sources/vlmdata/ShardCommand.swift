import ArgumentParser

struct ShardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "shard", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'shard' is not built yet") }
}
