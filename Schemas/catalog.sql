-- vlmdata catalog schema (generated from VLMCatalog/Schema.swift; a test keeps them identical).
-- The catalog is SQLite in WAL mode; each block below is one migration, applied in order.

-- migration: v1_foundation
-- Where records came from: one row per ingested annotation file (or LLaVA JSON, or synth run).
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                 -- coco | llava | synth
    name TEXT NOT NULL,                 -- split name, e.g. train2017; prefixes image keys
    uri TEXT NOT NULL,                  -- annotation file path
    images_root TEXT,                   -- image folder, zip or tar
    fingerprint TEXT NOT NULL,          -- sha256 of the annotation file
    created_at TEXT NOT NULL,
    UNIQUE (kind, name)
);

-- One row per image named by an annotation file, found or not.
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    key TEXT NOT NULL UNIQUE,           -- stable sample-key prefix: letters, digits, _ and - only
    external_id INTEGER,                -- COCO image id
    file_name TEXT NOT NULL,            -- as the annotation names it
    location TEXT,                      -- file path, or the archive holding it
    member TEXT,                        -- member name inside the archive (NULL for a plain file)
    sha256 TEXT,                        -- of the image bytes; equal bytes are processed once
    byte_size INTEGER,
    width INTEGER,                      -- from the image header (the annotation's when missing)
    height INTEGER,
    format TEXT,                        -- jpeg | png | ...
    status TEXT NOT NULL CHECK (status IN ('ok', 'missing', 'corrupt', 'size_mismatch', 'too_large')),
    error TEXT,
    UNIQUE (source_id, external_id)
);
CREATE INDEX images_sha256 ON images(sha256);
CREATE INDEX images_status ON images(status);

CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    external_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    supercategory TEXT,
    UNIQUE (source_id, external_id)
);

CREATE TABLE captions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    external_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (image_id, external_id)
);

CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    category_id INTEGER NOT NULL REFERENCES categories(id),
    external_id INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,   -- COCO bbox, pixels
    area REAL,
    iscrowd INTEGER NOT NULL DEFAULT 0,
    UNIQUE (image_id, external_id)
);

-- LLaVA conversations, imported or generated. image_id is NULL for text-only records.
CREATE TABLE instructions (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,           -- sample key: letters, digits, _ and - only
    image_id INTEGER REFERENCES images(id),
    source_id INTEGER REFERENCES sources(id),
    generator TEXT NOT NULL,            -- import | templates | llm
    kind TEXT NOT NULL,                 -- caption, detail, grounding, ..., conversation, complex
    group_id TEXT,                      -- links circular MCQ rotations, yes/no pairs
    conversations TEXT NOT NULL,        -- JSON array of {"from", "value"}
    meta TEXT,                          -- JSON: answer facts used by checks (box, count, letter, ...)
    params_hash TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX instructions_image ON instructions(image_id);
CREATE INDEX instructions_kind ON instructions(generator, kind);

-- One row per stage run: what ran, with which parameters, on which inputs, and what it produced.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    params TEXT NOT NULL,               -- canonical JSON
    input_fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    counts TEXT,                        -- JSON object
    error TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX runs_stage ON runs(stage, params_hash, input_fingerprint, status);

-- migration: v2_pixels
-- Preprocessed pixels live in pixel shards (tar of KEY.npy members); these rows index them.
CREATE TABLE pixel_shards (
    id INTEGER PRIMARY KEY,
    config_hash TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,          -- file name under shards/pixels/
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    records INTEGER NOT NULL
);

-- One row per (image bytes, preprocessing config). status 'error' rows keep the reason and no pixels.
CREATE TABLE pixels (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,               -- images.sha256
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,               -- canonical JSON: size, patch, mode, resample, fast_decode, ...
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error TEXT,
    pixel_shard_id INTEGER REFERENCES pixel_shards(id),
    offset INTEGER,                     -- byte offset of the .npy member's content in the pixel shard
    size INTEGER,                       -- byte size of that content (npy header + data)
    tiles INTEGER,
    patches INTEGER,                    -- per tile
    patch_dim INTEGER,                  -- P*P*3
    grid_rows INTEGER,                  -- anyres: tile grid of the chosen resolution (1x1 otherwise)
    grid_cols INTEGER,
    UNIQUE (sha256, config_hash)
);

-- migration: v3_tokenized
-- One row per (instruction, tokenization config). Token arrays are little-endian int32 blobs.
CREATE TABLE tokenized (
    id INTEGER PRIMARY KEY,
    instruction_id INTEGER NOT NULL REFERENCES instructions(id),
    config_hash TEXT NOT NULL,          -- tokenizer sha256 + template + limits
    tokenizer_sha256 TEXT NOT NULL,
    template TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'truncated', 'dropped', 'error')),
    error TEXT,
    input_ids BLOB,                     -- int32 LE; -200 at the image position
    labels BLOB,                        -- int32 LE; -100 where not supervised
    n_tokens INTEGER,                   -- text tokens (the image counts as 1 here)
    n_image_tokens INTEGER,             -- positions the image takes in the model (0 if text-only)
    n_supervised INTEGER,
    UNIQUE (instruction_id, config_hash)
);
CREATE INDEX tokenized_config ON tokenized(config_hash);

-- migration: v4_llm_calls
-- The LLM cache: every request keyed by the sha256 of its canonical body (no API key in it, ever).
CREATE TABLE llm_calls (
    request_hash TEXT PRIMARY KEY,
    image_id INTEGER REFERENCES images(id),
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,              -- canonical JSON body
    status TEXT NOT NULL CHECK (status IN ('ok', 'rejected', 'failed')),
    response TEXT,                      -- raw reply body
    reason TEXT,                        -- why rejected or failed
    http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at TEXT NOT NULL
);

-- migration: v5_shards
-- Training shards (WebDataset tar) and the per-sample index into them, as Megatron-Energon keeps one.
CREATE TABLE shards (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,          -- e.g. train-000000.tar
    path TEXT NOT NULL,                 -- relative to the workspace
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    params_hash TEXT NOT NULL,
    part TEXT                           -- I/N of a partitioned run, NULL for a whole run
);

CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    shard_id INTEGER NOT NULL REFERENCES shards(id),
    index_in_shard INTEGER NOT NULL,
    offset INTEGER NOT NULL,            -- byte offset of the sample's first tar header
    size INTEGER NOT NULL,              -- bytes from that header to the end of its last member
    tokens INTEGER NOT NULL,            -- text tokens
    supervised INTEGER NOT NULL,
    image_tokens INTEGER NOT NULL,
    has_image INTEGER NOT NULL,
    source TEXT,
    instruction_id INTEGER REFERENCES instructions(id),
    UNIQUE (shard_id, index_in_shard)
);

CREATE TABLE sample_parts (
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    name TEXT NOT NULL,                 -- member suffix: json, input_ids.npy, labels.npy, pixels.npy, jpg
    offset INTEGER NOT NULL,            -- byte offset of the member's content
    size INTEGER NOT NULL,
    PRIMARY KEY (sample_id, name)
);

-- migration: v6_lineage
-- Lineage: each run row also names its stage config (readable name, canonical JSON, hash) and the runs it
-- read from; each derived row names the run that made it. A stage whose config and inputs are unchanged is
-- skipped; the latest run of a stage (highest used_seq) is what the next stage reads by default.
ALTER TABLE runs ADD COLUMN name TEXT;              -- readable config name, e.g. vicuna_v1@mistral-v1
ALTER TABLE runs ADD COLUMN config TEXT;            -- canonical JSON of the stage config
ALTER TABLE runs ADD COLUMN config_hash TEXT;       -- sha256 of the stage name and config
ALTER TABLE runs ADD COLUMN inputs TEXT;            -- JSON array of the ids of the runs it read from
ALTER TABLE runs ADD COLUMN output TEXT;            -- config_hash of the rows it made (tokenized, pixels)
ALTER TABLE runs ADD COLUMN used_seq INTEGER;       -- raised each time the run is made or reused
CREATE INDEX runs_lineage ON runs(stage, config_hash, inputs);
ALTER TABLE instructions ADD COLUMN run_id INTEGER REFERENCES runs(id);
ALTER TABLE tokenized ADD COLUMN run_id INTEGER REFERENCES runs(id);
ALTER TABLE pixels ADD COLUMN run_id INTEGER REFERENCES runs(id);
ALTER TABLE shards ADD COLUMN run_id INTEGER REFERENCES runs(id);
ALTER TABLE samples ADD COLUMN run_id INTEGER REFERENCES runs(id);

-- migration: v7_runs_interrupted
-- A run whose process died (killed, crashed) is marked 'interrupted' by the next run that finds its row
-- still 'running' and its process gone: runs now record the process id and host that started them.
CREATE TABLE runs_v7 (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    params TEXT NOT NULL,               -- canonical JSON
    input_fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    counts TEXT,                        -- JSON object
    error TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    name TEXT,                          -- readable config name, e.g. vicuna_v1@mistral-v1
    config TEXT,                        -- canonical JSON of the stage config
    config_hash TEXT,                   -- sha256 of the stage name and config
    inputs TEXT,                        -- JSON array of the ids of the runs it read from
    output TEXT,                        -- config_hash of the rows it made (tokenized, pixels)
    used_seq INTEGER,                   -- raised each time the run is made or reused
    pid INTEGER,                        -- process that started the run (NULL before v7)
    host TEXT                           -- its host name
);
INSERT INTO runs_v7 (id, stage, params_hash, params, input_fingerprint, status, counts, error, started_at, ended_at,
                     name, config, config_hash, inputs, output, used_seq)
    SELECT id, stage, params_hash, params, input_fingerprint, status, counts, error, started_at, ended_at,
           name, config, config_hash, inputs, output, used_seq FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v7 RENAME TO runs;
CREATE INDEX runs_stage ON runs(stage, params_hash, input_fingerprint, status);
CREATE INDEX runs_lineage ON runs(stage, config_hash, inputs);

-- migration: v8_checksums
-- Checksums recorded when a shard is written (XXH3 from libxxhash), so every read can be checked.
-- NULL in rows written before this migration: those reads are not checked.
ALTER TABLE sample_parts ADD COLUMN xxh3 INTEGER;   -- XXH3_64bits of the member's content, as a signed
                                                    -- 64-bit integer: printf('%016x', xxh3) = `xxhsum -H3`
ALTER TABLE shards ADD COLUMN xxh3_128 TEXT;        -- XXH3_128bits of the whole file, as `xxhsum -H2` prints it

-- migration: v9_eval_sets
-- Held-out evaluation sets built by `vlmdata eval build`, and the images they use. Training shards leave
-- these images out (by sha256, so the same bytes under another name are caught too).
CREATE TABLE eval_sets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,          -- e.g. pope-val2017 (the output folder's name)
    kind TEXT NOT NULL,                 -- pope | mme | mmbench | refcoco
    split TEXT NOT NULL,                -- sources.name the questions were built from
    params_hash TEXT NOT NULL,
    params TEXT NOT NULL,               -- canonical JSON: count, seed, sampling, frame, ...
    directory TEXT NOT NULL,            -- where the files were written
    questions INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE eval_images (
    eval_set_id INTEGER NOT NULL REFERENCES eval_sets(id) ON DELETE CASCADE,
    image_id INTEGER NOT NULL REFERENCES images(id),
    sha256 TEXT NOT NULL,               -- images.sha256 when the set was built
    PRIMARY KEY (eval_set_id, image_id)
);
CREATE INDEX eval_images_sha256 ON eval_images(sha256);

-- migration: v10_pixel_checksums
-- Pixel shard members are checked like sample shard members: XXH3_64bits of each member's content, recorded
-- by patchify, checked when `shard` copies the member and by `verify`. NULL in rows written before.
ALTER TABLE pixels ADD COLUMN xxh3 INTEGER;         -- as sample_parts.xxh3: printf('%016x', xxh3) = `xxhsum -H3`

-- migration: v11_urls
-- `vlmdata ingest urls`: one row per list record (image URL + caption) once it has a result. A record with no
-- row has not been fetched yet; a rerun fetches only those (and, asked, the failed ones). An ok row names the
-- image row made for it; the bytes are a content-addressed file in the workspace (blobs/, by sha256).
CREATE TABLE urls (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    key TEXT NOT NULL UNIQUE,           -- the image key it gets: split + "_" + record number or --key-col
    url TEXT NOT NULL,
    caption TEXT,
    line INTEGER NOT NULL,              -- 1-based line in its list file
    status TEXT NOT NULL CHECK (status IN ('ok', 'http_error', 'timeout', 'stalled', 'too_large', 'not_image',
                                           'decode_error', 'dns_error', 'connect_error', 'redirect_loop',
                                           'opted_out', 'duplicate', 'refused')),
    http_status INTEGER,
    error TEXT,
    final_url TEXT,                     -- after redirects
    bytes INTEGER,
    width INTEGER,
    height INTEGER,
    sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    image_id INTEGER REFERENCES images(id),
    fetched_at TEXT NOT NULL
);
CREATE INDEX urls_url ON urls(url);
CREATE INDEX urls_status ON urls(status);

-- migration: v12_shard_urls
-- Where `vlmdata shard --upload` put each shard (e.g. s3://bucket/prefix/shards/train-000000.tar); NULL for
-- shards never uploaded. A remote index resolves shards by this URL, else by path relative to the index.
ALTER TABLE shards ADD COLUMN url TEXT;

-- migration: v13_shard_sha256_optional
-- A shard's integrity hash is the XXH3-128 recorded at write time; its sha256 is computed only when asked
-- (`shard --sha256`), so shards.sha256 becomes nullable (a table rebuild: SQLite cannot drop NOT NULL).
CREATE TABLE shards_v13 (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,          -- e.g. train-000000.tar
    path TEXT NOT NULL,                 -- relative to the workspace
    sha256 TEXT,                        -- NULL unless written with `shard --sha256`
    bytes INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    params_hash TEXT NOT NULL,
    part TEXT,                          -- I/N of a partitioned run, NULL for a whole run
    run_id INTEGER REFERENCES runs(id),
    xxh3_128 TEXT,                      -- XXH3_128bits of the whole file, as `xxhsum -H2` prints it
    url TEXT                            -- where `shard --upload` put it
);
INSERT INTO shards_v13 (id, name, path, sha256, bytes, samples, params_hash, part, run_id, xxh3_128, url)
    SELECT id, name, path, sha256, bytes, samples, params_hash, part, run_id, xxh3_128, url FROM shards;
DROP TABLE shards;
ALTER TABLE shards_v13 RENAME TO shards;

-- migration: v14_grouped_samples
-- Grouped tokenization (the default): an image's instructions become one multi-turn sample, split into
-- several only where --max-length needs it. The row of a sample's first instruction holds the tokens and
-- `sample`; each other instruction of it gets a row naming that first instruction in `sample_of`, so every
-- instruction is tokenized exactly once. Both are NULL for one-sample-per-instruction rows.
ALTER TABLE tokenized ADD COLUMN sample TEXT;       -- JSON: keys, kinds, generators, box_frame, states_box,
                                                    -- conversations (the merged turns that were tokenized)
ALTER TABLE tokenized ADD COLUMN sample_of INTEGER REFERENCES instructions(id);

-- migration: v15_pixel_shard_xxh3
-- Pixel shards get the XXH3-128 `patchify` computes as it writes them (training shards have had one since
-- v8); their sha256 is computed only on demand (`verify --deep` records it), so pixel_shards.sha256 becomes
-- nullable (a table rebuild, as v13 did for shards). Rows from before keep their sha256 and no XXH3-128.
CREATE TABLE pixel_shards_v15 (
    id INTEGER PRIMARY KEY,
    config_hash TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,          -- file name under shards/pixels/
    sha256 TEXT,                        -- NULL unless computed on demand (or written before v15)
    bytes INTEGER NOT NULL,
    records INTEGER NOT NULL,
    xxh3_128 TEXT                       -- XXH3_128bits of the whole file, as `xxhsum -H2` prints it
);
INSERT INTO pixel_shards_v15 (id, config_hash, name, sha256, bytes, records)
    SELECT id, config_hash, name, sha256, bytes, records FROM pixel_shards;
DROP TABLE pixel_shards;
ALTER TABLE pixel_shards_v15 RENAME TO pixel_shards;
