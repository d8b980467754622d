import ArgumentParser

struct TrainSmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train-smoke", abstract: "(not built yet)")
    func run() throws { throw ValidationError("'train-smoke' is not built yet") }
}
