import VLMCore

/// A stage's parameters as its run row records them: the parameters' own keys plus `"part": "I/N"` when the run
/// handled one part. With no part it encodes exactly as the parameters do, so the hashes of whole runs are unchanged.
/// `catalog merge` reads the recorded parts to report and check coverage.
struct PartRunParams<Params: Encodable>: Encodable {
    var params: Params
    var part: PartSpec?

    init(_ params: Params, part: PartSpec?) {
        self.params = params
        self.part = part
    }

    enum Keys: String, CodingKey { case part }

    func encode(to encoder: any Encoder) throws {
        try params.encode(to: encoder)
        if let part {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(part, forKey: .part)
        }
    }
}
