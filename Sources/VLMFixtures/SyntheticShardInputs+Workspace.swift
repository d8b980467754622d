import Foundation
import VLMCatalog
import VLMCore

extension SyntheticShardInputs {
    /// Fills `workspace` with these inputs under the ingest lock (they are what ingest and the stages before shard
    /// would write); returns false, writing nothing, when this source is already there.
    ///
    /// ```swift
    /// _ = try SyntheticShardInputs(count: 1_000).fill(workspace: Workspace(root: "./bench-work"))
    /// ```
    public func fill(workspace: Workspace) throws -> Bool {
        let catalog = try Catalog(workspace: workspace)
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "ingest")
        defer { lock.release() }
        let existing = try catalog.sourceCount(kind: "synth", name: sourceName)
        guard existing == 0 else { return false }
        try fill(catalog)
        return true
    }
}
