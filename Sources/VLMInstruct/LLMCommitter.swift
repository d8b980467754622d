import Foundation
import GRDB
import VLMCatalog
import VLMCore

/// Group commit for the LLM generator: workers hand their finished calls to one committer thread, which writes
/// everything waiting in a single transaction, then wakes them. A worker waits for its own call to be committed
/// before it sends its next request, so a kill loses at most one answered call per worker; no lock is held while a
/// request is in flight, and at high concurrency one commit carries many calls instead of one each.
///
/// ```swift
/// let committer = LLMCommitter(catalog: catalog)
/// let added = try committer.commit { db, now in try InstructionStore.insert(rows, paramsHash: hash, now: now, db: db) }
/// committer.close()
/// ```
final class LLMCommitter: @unchecked Sendable {
    /// Writes one call in the shared transaction, given the transaction's timestamp (`Catalog.now()`, taken once
    /// per transaction: formatting a date costs more than the row).
    typealias Write = (Database, String) throws -> Int

    private let catalog: Catalog
    private let condition = NSCondition()
    private var pending: [(ticket: Int, write: Write)] = []
    private var results: [Int: Result<Int, any Error>] = [:]
    private var nextTicket = 0
    private var closed = false
    private var running = false
    /// Transactions written and calls they held, for the report.
    private(set) var transactions = 0

    init(catalog: Catalog) {
        self.catalog = catalog
    }

    /// Queues `write` for the next transaction and blocks until that transaction is committed; returns what
    /// `write` returned, or throws what the transaction threw (for every call that was in it).
    func commit(_ write: @escaping Write) throws -> Int {
        condition.lock()
        if !running {
            running = true
            Thread.detachNewThread { [self] in loop() }
        }
        let ticket = nextTicket
        nextTicket += 1
        pending.append((ticket, write))
        condition.broadcast()
        while results[ticket] == nil { condition.wait() }
        let result = results.removeValue(forKey: ticket)!
        condition.unlock()
        return try result.get()
    }

    /// Ends the committer thread once everything queued is written.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        while running { condition.wait() }
        condition.unlock()
    }

    private func loop() {
        condition.lock()
        while true {
            while pending.isEmpty && !closed { condition.wait() }
            if pending.isEmpty && closed { break }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            condition.unlock()
            var outcome: [Int: Result<Int, any Error>] = [:]
            do {
                let now = Catalog.now()
                let values = try catalog.write { db in try batch.map { try $0.write(db, now) } }
                for (entry, value) in zip(batch, values) { outcome[entry.ticket] = .success(value) }
            } catch {
                for entry in batch { outcome[entry.ticket] = .failure(error) }
            }
            condition.lock()
            transactions += 1
            results.merge(outcome) { $1 }
            condition.broadcast()
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }
}
