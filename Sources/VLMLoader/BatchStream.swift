import VLMCore

/// How samples become batches.
public struct BatchOptions: Sendable {
    /// Rows per batch.
    public var batchSize: Int
    /// Pack whole samples into rows of this many model positions (nil: one sample per row).
    public var packContext: Int?
    /// Rows the packer keeps open (its buffer).
    public var packOpenRows: Int
    public var collate: CollateOptions
    /// Stop after this many samples of this rank (then the open packed rows are emitted).
    public var maxSamples: Int?

    public init(batchSize: Int = 8, packContext: Int? = nil, packOpenRows: Int = 8,
                collate: CollateOptions = CollateOptions(), maxSamples: Int? = nil) {
        self.batchSize = batchSize
        self.packContext = packContext
        self.packOpenRows = packOpenRows
        self.collate = collate
        self.maxSamples = maxSamples
    }
}

/// Collated batches over one rank's sample stream: what a trainer iterates.
///
/// ```swift
/// let loader = try Loader(workspace: "./vlmdata-work", options: LoaderOptions(order: OrderSpec(seed: 1), unit: 16))
/// let batches = try loader.batches(epoch: 0, resuming: nil,
///                                  options: BatchOptions(batchSize: 16, collate: CollateOptions(padId: 0, pixelFormat: .float32(.clip))))
/// while let batch = try batches.next() {
///     step(batch.inputIds, batch.labels, batch.attentionMask, batch.pixelsFloat)
/// }
/// try batches.state().save(to: "loader-state.json")   // resume: loader.batches(epoch: 0, resuming: saved, ...)
/// ```
///
/// With packing, `state()` counts every sample handed to the packer; the rows still open are emitted when the
/// stream ends or stops at `maxSamples`, so a state saved after the last batch loses nothing.
public final class BatchStream: @unchecked Sendable {
    public let samples: SampleStream
    public let options: BatchOptions
    private let collator: Collator
    private var packer: Packer?
    private var readyRows: [[LoadedSample]] = []
    private var pulled = 0
    private var exhausted = false

    public init(samples: SampleStream, options: BatchOptions) throws {
        guard options.batchSize >= 1 else { throw VLMError(.invalidArgument, "the batch size must be at least 1") }
        if let context = options.packContext, context < 1 {
            throw VLMError(.invalidArgument, "the packing context must be at least 1 token")
        }
        self.samples = samples
        self.options = options
        collator = Collator(options: options.collate)
        if let context = options.packContext { packer = Packer(context: context, openRows: options.packOpenRows) }
    }

    /// Samples taken from the stream so far.
    public var samplesTaken: Int { pulled }
    /// Samples dropped by the packer as longer than the context.
    public var overlong: [String] { packer?.overlong ?? [] }
    /// The packer's padding fraction so far (nil without packing).
    public var packingPaddingFraction: Double? { packer?.paddingFraction }

    /// The next batch (the last may be smaller), nil at the end.
    public func next() throws -> Batch? {
        while readyRows.count < options.batchSize && !exhausted {
            if let limit = options.maxSamples, pulled >= limit {
                finish()
                break
            }
            guard let sample = try samples.next() else {
                finish()
                break
            }
            pulled += 1
            if packer != nil {
                readyRows += packer!.add(sample)
            } else {
                readyRows.append([sample])
            }
        }
        guard !readyRows.isEmpty else { return nil }
        let rows = Array(readyRows.prefix(options.batchSize))
        readyRows.removeFirst(rows.count)
        return try collator.collate(rows: rows, context: options.packContext ?? 0)
    }

    private func finish() {
        exhausted = true
        if packer != nil { readyRows += packer!.flush() }
    }

    /// Where a restart continues (see `SampleStream.state()`).
    public func state() -> LoaderState { samples.state() }

    public func close() { samples.close() }
}

extension Loader {
    /// Batches of this rank's stream from `state` when given, else from the start of `epoch`.
    public func batches(epoch: Int, resuming state: LoaderState?, options: BatchOptions) throws -> BatchStream {
        try BatchStream(samples: samples(epoch: epoch, resuming: state), options: options)
    }
}
