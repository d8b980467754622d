// libFuzzer target: the tokenizer.json loader and the encoder. An input whose first byte is below 0x10 is text:
// the rest is encoded by each real tokenizer named in FUZZ_TOKENIZERS (colon-separated tokenizer.json paths,
// loaded once), as bytes and as a String, and the ids must lie in the vocabulary and decode. Any other input is a
// tokenizer.json: it must load or throw a VLMError naming the file; one that loads must encode and decode a text
// made of its own tail. Never crash, hang or read out of bounds.
import Foundation
import VLMCore
import VLMText

private let tokenizers: [(name: String, tokenizer: Tokenizer, vocab: Int)] = {
    let paths = (ProcessInfo.processInfo.environment["FUZZ_TOKENIZERS"] ?? "").split(separator: ":").map(String.init)
    precondition(!paths.isEmpty, "set FUZZ_TOKENIZERS to one or more tokenizer.json paths")
    return paths.map { path in
        let tokenizer = try! Tokenizer(contentsOf: path)
        var vocab = 0
        while tokenizer.token(Int32(vocab)) != nil { vocab += 1 }
        return (path, tokenizer, vocab)
    }
}()

private func exercise(_ tokenizer: Tokenizer, _ text: [UInt8], name: String, vocab: Int?) {
    let session = tokenizer.makeSession()
    // Any bytes become a String (invalid UTF-8 repaired with U+FFFD, as every caller's text is).
    let string = String(decoding: text, as: UTF8.self)
    let ids = session.encode(string)
    for id in ids {
        precondition(id >= 0, "\(name): negative id \(id)")
        if let vocab { precondition(id < vocab || tokenizer.token(id) != nil, "\(name): id \(id) has no token") }
    }
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: false)
    // `encode(bytes:)` takes valid UTF-8 only (its documented contract; the first run of this target fed it a
    // truncated sequence and it read past the buffer): valid inputs go through it too, and must agree.
    if String(validating: text, as: UTF8.self) != nil {
        let bytesIDs = text.withUnsafeBufferPointer { session.encode(bytes: $0) }
        precondition(bytesIDs == ids, "\(name): bytes and String encodings differ for \(text)")
    }
}

/// Loads the real tokenizers before the first input, so that their load does not count against `-timeout`.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzTokenizerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    precondition(tokenizers.allSatisfy { $0.vocab > 0 }, "a tokenizer with an empty vocabulary")
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let first = bytes.first, first < 0x10 {
        let text = Array(bytes.dropFirst())
        for (name, tokenizer, vocab) in tokenizers { exercise(tokenizer, text, name: name, vocab: vocab) }
        return 0
    }
    let tokenizer: Tokenizer
    do {
        tokenizer = try Tokenizer(data: Data(bytes), path: "fuzz-tokenizer.json")
    } catch let error as VLMError {
        precondition(error.description.contains("fuzz-tokenizer.json"), "error does not name the file: \(error)")
        return 0
    } catch {
        preconditionFailure("an error that is not a VLMError: \(error)")
    }
    exercise(tokenizer, Array(bytes.suffix(64)), name: "fuzz-tokenizer.json", vocab: nil)
    exercise(tokenizer, Array("Hello world! A photo of 2 cats.\n<image>".utf8), name: "fuzz-tokenizer.json", vocab: nil)
    return 0
}
