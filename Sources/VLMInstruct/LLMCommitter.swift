import Foundation
import VLMCatalog
import VLMCore

/// Group commit for the LLM generator. A worker with a finished call queues its write; if no transaction is being
/// written it becomes the writer and commits everything queued (its own call and any that arrived meanwhile) in one
/// transaction, otherwise it waits for the writer to finish. A worker returns only once its own call is committed,
/// so a kill loses at most one answered call per worker; no lock is held while a request is in flight, no thread is
/// handed the work (a hand-off costs two wake-ups per call on a busy machine), and at high concurrency one commit
/// carries many calls.
///
/// ```swift
/// let committer = LLMCommitter(catalog: catalog)
/// let added = try committer.commit { tx, now in try InstructionStore.insert(rows, paramsHash: hash, now: now, tx: tx) }
/// ```
final class LLMCommitter: @unchecked Sendable {
    /// Writes one call in the shared transaction, given the transaction's timestamp (`Catalog.now()`, taken once
    /// per transaction: formatting a date costs more than the row).
    typealias Write = (CatalogTransaction, String) throws -> Int

    private let catalog: Catalog
    private let condition = NSCondition()
    private var pending: [(ticket: Int, write: Write)] = []
    private var results: [Int: Result<Int, any Error>] = [:]
    private var nextTicket = 0
    private var writing = false

    init(catalog: Catalog) {
        self.catalog = catalog
    }

    /// Queues `write` and returns once the transaction holding it is committed: what `write` returned, or what the
    /// transaction threw (for every call that was in it).
    func commit(_ write: @escaping Write) throws -> Int {
        condition.lock()
        defer { condition.unlock() }
        let ticket = nextTicket
        nextTicket += 1
        pending.append((ticket, write))
        while results[ticket] == nil {
            guard !writing else {
                condition.wait()
                continue
            }
            writing = true
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            condition.unlock()
            var outcome: [Int: Result<Int, any Error>] = [:]
            do {
                let now = Catalog.now()
                let values = try catalog.transaction { tx in try batch.map { try $0.write(tx, now) } }
                for (entry, value) in zip(batch, values) { outcome[entry.ticket] = .success(value) }
            } catch {
                for entry in batch { outcome[entry.ticket] = .failure(error) }
            }
            condition.lock()
            writing = false
            results.merge(outcome) { $1 }
            condition.broadcast()
        }
        return try results.removeValue(forKey: ticket)!.get()
    }
}
