import Foundation
import GRDB
import VLMCore
import VLMIO

/// Joins the catalogs (and shard files) of partitioned runs (`--part I/N`) into one workspace.
///
/// Rows are matched by their natural keys (source kind+name, image key, instruction key, ...), not by row id, so
/// parts that ingested the same annotation file agree; the same key with different content is a conflict.
/// Training samples must not overlap, and their shard runs must have used the same parameters.
///
/// Coverage: each input's parts are read from what its runs recorded (`"part": "I/N"` in the run parameters of
/// every stage that ran with `--part`). The inputs must come from one partitioning (same N), no part may be held by
/// two inputs, and every part of N must be present, unless `allowPartial` says a partial merge is intended. Shard files are hard-linked (copied across file systems)
/// into `OUT/shards/`, or with `referenceShards` left where they are and indexed by absolute path. Pixel shards
/// whose names collide with different content are renamed `mK-NAME` (K = position of the part in the list).
///
/// ```swift
/// let report = try CatalogMerge.merge(into: Workspace(root: "merged"),
///                                     parts: [Workspace(root: "part1"), Workspace(root: "part2")])
/// ```
public enum CatalogMerge {
    public static func merge(into out: Workspace, parts: [Workspace], referenceShards: Bool = false, allowPartial: Bool = false,
                             progress: any ProgressSink = SilentProgress()) throws -> StageReport {
        guard !parts.isEmpty else { throw VLMError(.invalidArgument, "no part workspaces to merge") }
        for part in parts {
            guard FileManager.default.fileExists(atPath: part.catalogPath) else {
                throw VLMError(.notFound, file: part.catalogPath, "part catalog does not exist")
            }
            guard part.root != out.root else {
                throw VLMError(.invalidArgument, file: part.root, "a part cannot also be the output workspace")
            }
        }
        guard Set(parts.map(\.root)).count == parts.count else {
            throw VLMError(.invalidArgument, "the same part workspace is listed twice")
        }
        // Open every part once through the Catalog (migrates older parts to the current schema).
        let partCatalogs = try parts.map { try Catalog(workspace: $0) }
        try checkPartitioning(partCatalogs)
        var coverage = try PartCoverage.of(partCatalogs)
        // Parts already merged into OUT count too: adding one of them again overlaps.
        if FileManager.default.fileExists(atPath: out.catalogPath),
           let existing = try PartCoverage.of([try Catalog(workspace: out)]).first, existing.count != nil {
            coverage.append(existing)
        }
        let summary = try PartCoverage.check(coverage, allowPartial: allowPartial)
        let catalog = try Catalog(workspace: out)
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "merge")   // one writer per stage per workspace
        defer { lock.release() }
        var counts: [String: Int] = [:]
        progress.start("catalog merge", total: parts.count)
        for (position, part) in partCatalogs.enumerated() {
            let added = try mergeOne(part, position: position + 1, into: catalog, referenceShards: referenceShards)
            for (k, v) in added { counts[k, default: 0] += v }
            progress.advance(by: 1)
        }
        counts["parts"] = parts.count
        counts["parts_of"] = summary.count
        counts["parts_present"] = summary.present.count
        counts["parts_missing"] = summary.missing.count
        progress.finish("\(parts.count) parts, \(counts["samples"] ?? 0) samples in \(counts["shards"] ?? 0) shards")
        var problems: [String] = []
        if !summary.missing.isEmpty {
            problems.append("partial merge (--partial): parts \(summary.missing.map { "\($0)/\(summary.count)" }.joined(separator: ", ")) are missing")
        }
        return StageReport(stage: "catalog merge", counts: counts, problems: problems)
    }

    /// The shard parameters (apart from the part) of every input are identical.
    static func checkPartitioning(_ parts: [Catalog]) throws {
        var params: (String, String)?      // (canonical params without part, workspace)
        for part in parts {
            if let json = try part.read({ db in
                try String.fetchOne(db, sql: "SELECT params FROM runs WHERE stage = 'shard' AND status = 'done' ORDER BY id DESC LIMIT 1")
            }), var object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] {
                object["part"] = nil
                let canonical = String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
                if let (first, where_) = params, first != canonical {
                    throw VLMError(.conflict, file: part.workspace.root,
                                   "shards were built with \(canonical), but \(where_) with \(first); the parts disagree on the configuration")
                }
                params = params ?? (canonical, part.workspace.root)
            }
        }
    }

    static func mergeOne(_ part: Catalog, position: Int, into catalog: Catalog, referenceShards: Bool) throws -> [String: Int] {
        let partRoot = part.workspace.root
        var counts: [String: Int] = [:]
        var pixelFiles: [(from: String, to: String)] = []
        var shardFiles: [(from: String, to: String)] = []
        try catalog.pool.writeWithoutTransaction { db in
            try db.execute(sql: "ATTACH DATABASE ? AS p", arguments: [part.workspace.catalogPath])
            defer { try? db.execute(sql: "DETACH DATABASE p") }
            try db.inTransaction {
                func conflict(_ sql: String, _ what: String) throws {
                    let rows = try String.fetchAll(db, sql: sql + " LIMIT 6")
                    guard rows.isEmpty else {
                        let shown = rows.prefix(5).joined(separator: ", ") + (rows.count > 5 ? ", ..." : "")
                        throw VLMError(.conflict, file: partRoot, "\(what): \(shown)")
                    }
                }
                func insert(_ table: String, _ sql: String) throws {
                    try db.execute(sql: sql)
                    counts[table, default: 0] += db.changesCount
                }
                try conflict("""
                    SELECT s.key FROM p.samples s JOIN main.samples m ON m.key = s.key ORDER BY s.key
                    """, "sample keys already in the merged catalog (overlapping parts)")
                try conflict("""
                    SELECT s.name FROM p.shards s JOIN main.shards m ON m.name = s.name ORDER BY s.name
                    """, "shard names already in the merged catalog (overlapping parts)")
                try conflict("""
                    SELECT ps.kind || ':' || ps.name FROM p.sources ps JOIN main.sources ms ON ms.kind = ps.kind AND ms.name = ps.name
                    WHERE ms.fingerprint != ps.fingerprint
                    """, "sources with the same name but a different annotation file")
                try conflict("""
                    SELECT pi.key FROM p.images pi JOIN main.images mi ON mi.key = pi.key
                    WHERE mi.sha256 IS NOT pi.sha256 OR mi.status != pi.status ORDER BY pi.key
                    """, "images with the same key but different bytes or status")
                try conflict("""
                    SELECT pi.key FROM p.instructions pi JOIN main.instructions mi ON mi.key = pi.key
                    WHERE mi.conversations != pi.conversations ORDER BY pi.key
                    """, "instructions with the same key but different conversations")
                try conflict("""
                    SELECT pi.key || ' (' || pt.config_hash || ')' FROM p.tokenized pt JOIN p.instructions pi ON pi.id = pt.instruction_id
                    JOIN main.instructions mi ON mi.key = pi.key JOIN main.tokenized mt ON mt.instruction_id = mi.id AND mt.config_hash = pt.config_hash
                    WHERE mt.input_ids IS NOT pt.input_ids OR mt.labels IS NOT pt.labels OR mt.sample IS NOT pt.sample
                    """, "tokenized rows with the same config but different tokens")
                try conflict("""
                    SELECT pp.sha256 || ' (' || pp.config_hash || ')' FROM p.pixels pp JOIN main.pixels mp
                    ON mp.sha256 = pp.sha256 AND mp.config_hash = pp.config_hash WHERE mp.config IS NOT pp.config
                    """, "pixel rows with the same config hash but a different config")

                try insert("sources", """
                    INSERT INTO main.sources (kind, name, uri, images_root, fingerprint, created_at)
                    SELECT kind, name, uri, images_root, fingerprint, created_at FROM p.sources ps
                    WHERE NOT EXISTS (SELECT 1 FROM main.sources ms WHERE ms.kind = ps.kind AND ms.name = ps.name) ORDER BY id
                    """)
                try db.execute(sql: """
                    CREATE TEMP TABLE source_map AS SELECT ps.id AS old, ms.id AS new FROM p.sources ps
                    JOIN main.sources ms ON ms.kind = ps.kind AND ms.name = ps.name
                    """)
                defer { try? db.execute(sql: "DROP TABLE IF EXISTS temp.source_map") }
                try insert("images", """
                    INSERT INTO main.images (source_id, key, external_id, file_name, location, member, sha256, byte_size,
                                             width, height, format, status, error)
                    SELECT sm.new, pi.key, pi.external_id, pi.file_name, pi.location, pi.member, pi.sha256, pi.byte_size,
                           pi.width, pi.height, pi.format, pi.status, pi.error
                    FROM p.images pi JOIN temp.source_map sm ON sm.old = pi.source_id
                    WHERE NOT EXISTS (SELECT 1 FROM main.images mi WHERE mi.key = pi.key) ORDER BY pi.id
                    """)
                try insert("categories", """
                    INSERT OR IGNORE INTO main.categories (source_id, external_id, name, supercategory)
                    SELECT sm.new, pc.external_id, pc.name, pc.supercategory FROM p.categories pc
                    JOIN temp.source_map sm ON sm.old = pc.source_id ORDER BY pc.id
                    """)
                try insert("captions", """
                    INSERT OR IGNORE INTO main.captions (image_id, external_id, text)
                    SELECT mi.id, pc.external_id, pc.text FROM p.captions pc JOIN p.images pi ON pi.id = pc.image_id
                    JOIN main.images mi ON mi.key = pi.key ORDER BY pc.id
                    """)
                try insert("objects", """
                    INSERT OR IGNORE INTO main.objects (image_id, category_id, external_id, x, y, w, h, area, iscrowd)
                    SELECT mi.id, mc.id, po.external_id, po.x, po.y, po.w, po.h, po.area, po.iscrowd
                    FROM p.objects po JOIN p.images pi ON pi.id = po.image_id JOIN main.images mi ON mi.key = pi.key
                    JOIN p.categories pc ON pc.id = po.category_id JOIN temp.source_map sm ON sm.old = pc.source_id
                    JOIN main.categories mc ON mc.source_id = sm.new AND mc.external_id = pc.external_id ORDER BY po.id
                    """)
                try insert("instructions", """
                    INSERT INTO main.instructions (key, image_id, source_id, generator, kind, group_id, conversations, meta,
                                                   params_hash, created_at)
                    SELECT pi.key, mi.id, sm.new, pi.generator, pi.kind, pi.group_id, pi.conversations, pi.meta,
                           pi.params_hash, pi.created_at
                    FROM p.instructions pi LEFT JOIN p.images pim ON pim.id = pi.image_id LEFT JOIN main.images mi ON mi.key = pim.key
                    LEFT JOIN temp.source_map sm ON sm.old = pi.source_id
                    WHERE NOT EXISTS (SELECT 1 FROM main.instructions x WHERE x.key = pi.key) ORDER BY pi.id
                    """)
                // `ingest urls` results: one row per list record, its image found again by key.
                try insert("urls", """
                    INSERT INTO main.urls (source_id, key, url, caption, line, status, http_status, error, final_url, bytes,
                                           width, height, sha256, attempts, image_id, fetched_at)
                    SELECT sm.new, pu.key, pu.url, pu.caption, pu.line, pu.status, pu.http_status, pu.error, pu.final_url,
                           pu.bytes, pu.width, pu.height, pu.sha256, pu.attempts, mi.id, pu.fetched_at
                    FROM p.urls pu JOIN temp.source_map sm ON sm.old = pu.source_id
                    LEFT JOIN p.images pi ON pi.id = pu.image_id LEFT JOIN main.images mi ON mi.key = pi.key
                    WHERE NOT EXISTS (SELECT 1 FROM main.urls mu WHERE mu.key = pu.key) ORDER BY pu.id
                    """)
                for (table, added) in try Catalog.mergeEvalSets(db, from: "p", part: partRoot) {
                    counts[table, default: 0] += added
                }
                try insert("llm_calls", """
                    INSERT OR IGNORE INTO main.llm_calls (request_hash, image_id, kind, model, request, status, response, reason,
                                                          http_status, attempts, prompt_tokens, completion_tokens, created_at)
                    SELECT pl.request_hash, mi.id, pl.kind, pl.model, pl.request, pl.status, pl.response, pl.reason,
                           pl.http_status, pl.attempts, pl.prompt_tokens, pl.completion_tokens, pl.created_at
                    FROM p.llm_calls pl LEFT JOIN p.images pi ON pi.id = pl.image_id LEFT JOIN main.images mi ON mi.key = pi.key
                    """)
                try insert("tokenized", """
                    INSERT OR IGNORE INTO main.tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, error,
                                                          input_ids, labels, n_tokens, n_image_tokens, n_supervised,
                                                          sample, sample_of)
                    SELECT mi.id, pt.config_hash, pt.tokenizer_sha256, pt.template, pt.status, pt.error, pt.input_ids,
                           pt.labels, pt.n_tokens, pt.n_image_tokens, pt.n_supervised, pt.sample, mh.id
                    FROM p.tokenized pt JOIN p.instructions pi ON pi.id = pt.instruction_id
                    JOIN main.instructions mi ON mi.key = pi.key
                    LEFT JOIN p.instructions ph ON ph.id = pt.sample_of LEFT JOIN main.instructions mh ON mh.key = ph.key
                    ORDER BY pt.id
                    """)
                // Pixel shards: same name and bytes are the same file; a name taken by other bytes gets a prefix. Bytes
                // are compared by XXH3-128, or sha256 for pixel shards written before they had one (a 32-digit XXH3
                // never equals a 64-digit sha256, so a pair with one of each is taken as different and renamed).
                try db.execute(sql: """
                    CREATE TEMP TABLE pixel_shard_map AS
                    SELECT ps.id AS old, ps.name AS old_name,
                           CASE WHEN ms.id IS NULL OR COALESCE(ms.xxh3_128, ms.sha256) = COALESCE(ps.xxh3_128, ps.sha256)
                                THEN ps.name ELSE 'm\(position)-' || ps.name END AS new_name,
                           ms.id IS NOT NULL AND COALESCE(ms.xxh3_128, ms.sha256) = COALESCE(ps.xxh3_128, ps.sha256) AS existing
                    FROM p.pixel_shards ps LEFT JOIN main.pixel_shards ms ON ms.name = ps.name
                    """)
                defer { try? db.execute(sql: "DROP TABLE IF EXISTS temp.pixel_shard_map") }
                try conflict("""
                    SELECT m.new_name FROM temp.pixel_shard_map m JOIN main.pixel_shards ms ON ms.name = m.new_name
                    JOIN p.pixel_shards ps ON ps.id = m.old
                    WHERE NOT m.existing AND COALESCE(ms.xxh3_128, ms.sha256) IS NOT COALESCE(ps.xxh3_128, ps.sha256)
                    """, "pixel shard names taken by other files even after renaming")
                for row in try Row.fetchAll(db, sql: "SELECT old_name, new_name FROM temp.pixel_shard_map WHERE NOT existing") {
                    pixelFiles.append((part.workspace.pixelShardsDirectory + "/" + (row["old_name"] as String),
                                       catalog.workspace.pixelShardsDirectory + "/" + (row["new_name"] as String)))
                }
                try insert("pixel_shards", """
                    INSERT INTO main.pixel_shards (config_hash, name, sha256, bytes, records, xxh3_128)
                    SELECT ps.config_hash, m.new_name, ps.sha256, ps.bytes, ps.records, ps.xxh3_128 FROM p.pixel_shards ps
                    JOIN temp.pixel_shard_map m ON m.old = ps.id WHERE NOT m.existing ORDER BY ps.id
                    """)
                try insert("pixels", """
                    INSERT OR IGNORE INTO main.pixels (sha256, config_hash, config, status, error, pixel_shard_id, offset, size,
                                                       tiles, patches, patch_dim, grid_rows, grid_cols, xxh3)
                    SELECT pp.sha256, pp.config_hash, pp.config, pp.status, pp.error, ms.id, pp.offset, pp.size,
                           pp.tiles, pp.patches, pp.patch_dim, pp.grid_rows, pp.grid_cols, pp.xxh3
                    FROM p.pixels pp LEFT JOIN temp.pixel_shard_map m ON m.old = pp.pixel_shard_id
                    LEFT JOIN main.pixel_shards ms ON ms.name = m.new_name ORDER BY pp.id
                    """)
                // Training shards, their samples and members.
                for row in try Row.fetchAll(db, sql: "SELECT name, path FROM p.shards ORDER BY name") {
                    let from = part.workspace.resolve(row["path"])
                    shardFiles.append((from, catalog.workspace.shardsDirectory + "/" + (row["name"] as String)))
                }
                let pathExpression = referenceShards ? "? || '/' || ps.path" : "'shards/' || ps.name"
                try db.execute(sql: """
                    INSERT INTO main.shards (name, path, sha256, bytes, samples, params_hash, part, xxh3_128, url)
                    SELECT ps.name, CASE WHEN ps.path LIKE '/%' THEN ps.path ELSE \(pathExpression) END,
                           ps.sha256, ps.bytes, ps.samples, ps.params_hash, ps.part, ps.xxh3_128, ps.url
                    FROM p.shards ps ORDER BY ps.name
                    """, arguments: referenceShards ? [partRoot] : [])
                counts["shards", default: 0] += db.changesCount
                try insert("samples", """
                    INSERT INTO main.samples (key, shard_id, index_in_shard, offset, size, tokens, supervised, image_tokens,
                                              has_image, source, instruction_id)
                    SELECT s.key, ms.id, s.index_in_shard, s.offset, s.size, s.tokens, s.supervised, s.image_tokens,
                           s.has_image, s.source, mi.id
                    FROM p.samples s JOIN p.shards ps ON ps.id = s.shard_id JOIN main.shards ms ON ms.name = ps.name
                    LEFT JOIN p.instructions pi ON pi.id = s.instruction_id LEFT JOIN main.instructions mi ON mi.key = pi.key
                    ORDER BY ps.name, s.index_in_shard
                    """)
                try insert("sample_parts", """
                    INSERT INTO main.sample_parts (sample_id, name, offset, size, xxh3)
                    SELECT ms.id, sp.name, sp.offset, sp.size, sp.xxh3 FROM p.sample_parts sp JOIN p.samples s ON s.id = sp.sample_id
                    JOIN main.samples ms ON ms.key = s.key
                    """)
                try insert("runs", """
                    INSERT INTO main.runs (stage, params_hash, params, input_fingerprint, status, counts, error, started_at, ended_at)
                    SELECT stage, params_hash, params, input_fingerprint, status, counts, error, started_at, ended_at
                    FROM p.runs ORDER BY id
                    """)
                // Files go in before the transaction commits: a failed copy leaves the merged catalog unchanged.
                for (from, to) in pixelFiles { try placeFile(from: from, to: to) }
                if !referenceShards { for (from, to) in shardFiles { try placeFile(from: from, to: to) } }
                return .commit
            }
        }
        return counts
    }

    /// Hard-links `from` to `to` (atomically, through a temporary name), copying when linking is impossible.
    static func placeFile(from: String, to: String) throws {
        guard FileManager.default.fileExists(atPath: from) else {
            throw VLMError(.notFound, file: from, "shard file named by the part catalog does not exist")
        }
        if FileManager.default.fileExists(atPath: to) {
            // Same bytes already in place (XXH3-128: an identity check between two local files, not a tamper check).
            if let there = try? XXH3.hash128(file: to), there == (try? XXH3.hash128(file: from)) { return }
            throw VLMError(.conflict, file: to, "a different file with this name is already in the merged workspace")
        }
        let tmp = AtomicFile.temporaryPath(for: to)
        unlink(tmp)
        if link(from, tmp) != 0 {
            do { try FileManager.default.copyItem(atPath: from, toPath: tmp) } catch {
                throw VLMError.io(file: to, "cannot copy \(from): \(error.localizedDescription)")
            }
        }
        guard rename(tmp, to) == 0 else {
            unlink(tmp)
            throw VLMError.io(file: to, "rename failed: \(String(cString: strerror(errno)))")
        }
    }
}
