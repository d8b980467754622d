import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMInstruct
import VLMPipeline

struct GenInstructionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gen-instructions",
        abstract: "Generate LLaVA instructions from annotations (templates) or through an OpenAI-compatible LLM.",
        discussion: """
        --generator templates: answers come from the catalog's captions, boxes and categories. Kinds: caption \
        (brief description, LLaVA pretraining style), detail, grounding (expression → box, box → description; \
        unambiguous, non-crowd, non-tiny objects only), count (no crowd), yesno (MME-style pairs, balanced), mcq \
        (MMBench-style, 4 options; --circular adds the rotations under one group id), multiturn. The same --seed gives \
        the same instructions byte for byte; running again adds nothing.

        --generator llm: one chat request per image and kind (conversation, detail, complex) with the image's captions \
        and normalized boxes after a system message and few-shot examples. The API key is read from OPENAI_API_KEY \
        only; without it nothing is sent unless --no-auth says the endpoint needs no key. The key, and any Bearer or \
        Authorization text, is removed from every stored reply, reason and message; a reply quoting the key is \
        rejected. A reply must have the shape of its kind (detail: one paragraph; complex: one Question:/Answer: \
        pair; conversation: pairs) or it is stored as rejected with its reason. --max-tokens reserves each request's \
        worst case (every prompt byte a token, plus --reply-max-tokens) before sending, so it is never exceeded. \
        A run where no request gave a usable reply exits non-zero with the reasons counted. Replies are cached in llm_calls by the sha256 of the request body: a rerun, also after a kill, sends only \
        requests without a reply. Retries 408/409/429/5xx and connection errors with backoff (honouring Retry-After); \
        never 400/401/403/404 or insufficient_quota. Budgets stop the run cleanly; run again to continue.
        """)

    enum GeneratorName: String, ExpressibleByArgument, CaseIterable { case templates, llm }

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: "templates or llm.") var generator: GeneratorName = .templates
    @Option(help: ArgumentHelp("Comma-separated kinds. templates: \(TemplateKind.allCases.map(\.rawValue).joined(separator: ",")) (default all); llm: \(LLMKind.allCases.map(\.rawValue).joined(separator: ",")) (default all).", valueName: "list"))
    var kinds: String?
    @Option(help: "Seed of the phrasing and option choices.") var seed: UInt64 = 0

    // templates
    @Option(help: ArgumentHelp("templates: instructions per image and kind (a yes/no pair and a circular group count once).", valueName: "n"))
    var perImage = 1
    @Flag(help: "templates: emit the 4 rotations of each multiple-choice question, linked by a group id.") var circular = false
    @Option(help: ArgumentHelp("templates: smallest box, as a fraction of the image, that grounding uses.", valueName: "f"))
    var minBox = 0.01

    // llm
    @Option(help: ArgumentHelp("llm: endpoint base, e.g. https://api.openai.com/v1 (/chat/completions is appended).", valueName: "url"))
    var baseURL: String?
    @Option(help: "llm: model name.") var model: String?
    @Option(help: "llm: concurrent requests.") var concurrency = 4
    @Option(help: ArgumentHelp("llm: requests per minute limit.", valueName: "n")) var rpm: Int?
    @Option(help: ArgumentHelp("llm: tokens per minute limit (prompt estimate + max reply).", valueName: "n")) var tpm: Int?
    @Option(help: ArgumentHelp("llm: stop after sending this many requests (retries count).", valueName: "n")) var maxRequests: Int?
    @Option(help: ArgumentHelp("llm: tokens (prompt + completion) this run may use; each request reserves its worst case first, so the budget is never exceeded.", valueName: "n")) var maxTokens: Int?
    @Option(help: ArgumentHelp("llm: max_tokens of each request.", valueName: "n")) var replyMaxTokens = 1024
    @Option(help: ArgumentHelp("llm: per-request timeout in seconds.", valueName: "s")) var timeout = 120.0
    @Option(help: ArgumentHelp("llm: retries per request.", valueName: "n")) var maxRetries = 5
    @Option(help: ArgumentHelp("llm: sampling temperature.", valueName: "t")) var temperature = 0.0
    @Flag(help: "llm: ask for JSON replies (response_format json_object).") var jsonMode = false
    @Flag(help: "llm: send no Authorization header (an endpoint that needs no key); without it OPENAI_API_KEY must be set.")
    var noAuth = false
    @Option(help: ArgumentHelp("Only the first N images (key order).", valueName: "n")) var limit: Int?
    @Option(help: ArgumentHelp("The frame boxes are stated in (templates: in the answers; llm: in the prompt), matching patchify --mode: pad (LLaVA-1.5's padded square), crop (the centre crop; boxes it cuts, and objects in counts and presence, are left out), original (the whole image: squash, anyres). Instructions record it and shard checks it; another frame adds rows beside the first ones.", valueName: "frame"))
    var boxFrame: BoxFrame = .original
    @Option(help: PartHelp.text) var part: PartSpec?

    @Flag(help: "Print the report as JSON.") var json = false

    var config: GenInstructionsStep.Config {
        var c = GenInstructionsStep.Config()
        c.generator = generator == .llm ? .llm : .templates
        c.kinds = kinds
        c.seed = seed
        c.perImage = perImage
        c.circular = circular
        c.minBox = minBox
        c.baseURL = baseURL
        c.model = model
        c.concurrency = concurrency
        c.rpm = rpm
        c.tpm = tpm
        c.maxRequests = maxRequests
        c.maxTokens = maxTokens
        c.replyMaxTokens = replyMaxTokens
        c.timeout = timeout
        c.maxRetries = maxRetries
        c.temperature = temperature
        c.jsonMode = jsonMode
        c.noAuth = noAuth
        c.limit = limit
        c.boxFrame = boxFrame.rawValue
        c.part = part?.description
        return c
    }

    func validate() throws { _ = try makeStage(GenInstructionsStep.self, config) }

    func run() throws {
        try runStage(try makeStage(GenInstructionsStep.self, config), workspace.context(), json: json)
    }
}

extension BoxFrame: ExpressibleByArgument {}
