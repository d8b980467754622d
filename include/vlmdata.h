/*
 * vlmdata.h: the C ABI of libVLMDataC.so, the streaming loader (VLMLoader) for any language with a C FFI.
 * Built by `swift build -c release --product VLMDataC`; python/vlmdata wraps it with ctypes.
 *
 *   vlmdata_loader *loader;  char err[1024];
 *   if (vlmdata_loader_open("{\"workspace\": \"ws\", \"seed\": 7, \"batch_size\": 8}", &loader, err, sizeof err))
 *       fprintf(stderr, "%s\n", err);
 *   vlmdata_stream_options o = {.epoch = 0, .worker = 0, .workers = 1, .chunk = 8, .threads = 2, .prefetch = 32,
 *                               .pack_context = 0, .pack_rows = 8};
 *   vlmdata_stream *stream;
 *   vlmdata_stream_open(loader, &o, NULL, &stream, err, sizeof err);
 *   vlmdata_batch_info info;
 *   while (vlmdata_stream_next(stream, 8, &info, err, sizeof err) == 0 && info.samples > 0) {
 *       ... allocate buffers of the sizes in info, fill a vlmdata_batch_buffers, then
 *       vlmdata_stream_copy(stream, &buffers, err, sizeof err);
 *   }
 *   vlmdata_stream_free(stream); vlmdata_loader_free(loader);
 *
 * Errors: functions return 0, or a code below with a message (file, record, what is wrong) in `err`.
 * Handles are opaque; one thread uses a handle at a time. Buffers are the caller's.
 * Inside, background threads read a stream's samples a batch at a time into one buffer each (checked against
 * their XXH3), handed over whole; vlmdata_stream_copy copies straight from those buffers.
 */
#ifndef VLMDATA_H
#define VLMDATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VLMDATA_ABI_VERSION 2

enum {
    VLMDATA_OK = 0,
    VLMDATA_BUFFER_TOO_SMALL = -1,
    VLMDATA_BAD_INPUT = 1,
    VLMDATA_NOT_FOUND = 2,
    VLMDATA_IO = 3,
    VLMDATA_UNSUPPORTED = 4,
    VLMDATA_CONFLICT = 5, /* e.g. a resume state from other shards or another order */
    VLMDATA_INVALID_ARGUMENT = 6,
    VLMDATA_NETWORK = 7,
    VLMDATA_CORRUPT = 8,
    VLMDATA_GATE_FAILED = 9,
    VLMDATA_OTHER = 10,
};

typedef struct vlmdata_loader vlmdata_loader;
typedef struct vlmdata_stream vlmdata_stream;

/* Returns VLMDATA_ABI_VERSION of the library. */
int32_t vlmdata_abi_version(void);

/*
 * This process's place in a data-parallel job, as a loader opened with these values would take it: `rank` and
 * `world_size` are the caller's (-1: not given), the rest comes from torchrun's $RANK/$WORLD_SIZE/$LOCAL_RANK, else
 * Slurm's $SLURM_PROCID/$SLURM_NTASKS/$SLURM_LOCALID, else 0 of 1. `out[0]` rank, `out[1]` world size, `out[2]`
 * local rank. Inconsistent values (a rank without its world size, a rank outside the world) are
 * VLMDATA_INVALID_ARGUMENT with a message naming where each value came from.
 */
int32_t vlmdata_topology(int64_t rank, int64_t world_size, int64_t *out, char *err, size_t err_capacity);

/*
 * Opens a loader. `config_json` is one JSON object; every field is optional except a source:
 *   "workspace": folder with catalog.sqlite and shards/    "mix": [{"workspace": DIR, "policy": "weight"|"repeat"|"choose", "value": X}, ...]
 *   "urls": ["https://host/train-{000000..000009}.tar", ...] or "shard_list": FILE  (with "workspace": its catalog is the index)
 *   "index": "s3://bucket/prefix/index.sqlite" or "https://host/ds/index.sqlite": a published index (docs/s3.md);
 *            a "workspace" that is such a URL means the same. S3 credentials come from the AWS_* variables.
 *   "cache_dir", "cache_bytes"                               (HTTP cache; default WORKSPACE/cache/rank-R, 10 GB)
 *   "seed" (0), "shuffle": "none"|"shard"|"block" (block), "block_size" (1024), "partitions" (8), "group_megabatch" (0)
 *   "rank", "world_size" (default: $RANK/$WORLD_SIZE, Slurm's, or 0 of 1), "batch_size" (1: every rank gets a multiple)
 *   "drop_last" (false: pad by repeating), "on_missing": "error"|"skip", "epoch_size" (mixtures)
 *   "resume": a loader state object: the order fields default to its own (as `vlmdata stream --resume`)
 */
int32_t vlmdata_loader_open(const char *config_json, vlmdata_loader **out, char *err, size_t err_capacity);
void vlmdata_loader_free(vlmdata_loader *loader);

typedef struct {
    int64_t epoch_samples;  /* global positions of the epoch */
    int64_t rank_samples;   /* samples this rank takes from the start (or the resume state) to the epoch's end */
    int64_t epoch;          /* the epoch the stream runs (a finished resume state moves to the next) */
    int64_t consumed;       /* global positions already consumed in it */
    int64_t world_size;
    int64_t rank;
} vlmdata_plan_info;

/* The plan of `epoch`, or of the stream `resume_json` (a saved state; NULL or "" for none) continues. */
int32_t vlmdata_loader_plan(vlmdata_loader *loader, int64_t epoch, const char *resume_json, vlmdata_plan_info *out,
                            char *err, size_t err_capacity);

/*
 * The resume state (JSON, as `vlmdata stream --save-state` writes) once this rank has consumed `rank_taken` samples
 * of the stream (epoch, resume_json) starts. Ranks are taken to advance in lockstep; the state resumes on any world
 * size. Returns VLMDATA_BUFFER_TOO_SMALL with *needed set when `buffer` is too small.
 */
int32_t vlmdata_loader_state(vlmdata_loader *loader, int64_t epoch, const char *resume_json, int64_t rank_taken,
                             char *buffer, size_t capacity, size_t *needed, char *err, size_t err_capacity);

typedef struct {
    int64_t epoch;
    int64_t worker;       /* this consumer's share of the rank: chunks worker, worker + workers, ... */
    int64_t workers;
    int64_t chunk;        /* samples per chunk: the consumer's batch size keeps batches in rank order */
    int64_t threads;      /* background decode threads (0: decode in vlmdata_stream_next) */
    int64_t prefetch;     /* samples each thread decodes ahead */
    int64_t pack_context; /* > 0: pack whole samples into rows of this many model positions */
    int64_t pack_rows;    /* rows the packer keeps open */
} vlmdata_stream_options;

int32_t vlmdata_stream_open(vlmdata_loader *loader, const vlmdata_stream_options *options, const char *resume_json,
                            vlmdata_stream **out, char *err, size_t err_capacity);
void vlmdata_stream_free(vlmdata_stream *stream);

typedef struct {
    int64_t samples;      /* 0 at the end of the stream */
    int64_t tokens;       /* input ids (= labels) over the samples */
    int64_t pixel_bytes;  /* uint8 patches over the samples */
    int64_t key_bytes;    /* keys, each NUL-terminated */
    int64_t meta_bytes;   /* KEY.json members */
    int64_t rank_taken;   /* rank samples consumed once this batch is delivered (for vlmdata_loader_state) */
    int64_t skipped;      /* samples of missing shards skipped so far (on_missing = skip) */
    int64_t overlong;     /* samples longer than pack_context dropped so far */
} vlmdata_batch_info;

/* Reads the next batch: up to `max_samples` samples, or with packing one packed row of whole samples. */
int32_t vlmdata_stream_next(vlmdata_stream *stream, int64_t max_samples, vlmdata_batch_info *info, char *err,
                            size_t err_capacity);

/* The caller's buffers for vlmdata_stream_copy; n = info.samples. A NULL field is skipped. */
typedef struct {
    int32_t *input_ids;     /* [tokens]; LLaVA's -200 where the image goes */
    int32_t *labels;        /* [tokens]; -100 where not supervised */
    int64_t *token_offsets; /* [n + 1] */
    uint8_t *pixels;        /* [pixel_bytes]: per sample uint8 [tiles, patches, patch*patch*3], unnormalized */
    int64_t *pixel_offsets; /* [n + 1] */
    int64_t *pixel_shapes;  /* [n * 3]: tiles, patches, dim (0, 0, 0 for a text-only sample) */
    int64_t *image_tokens;  /* [n] */
    int64_t *indices;       /* [n]: each sample's rank-local index */
    uint8_t *is_pad;        /* [n]: 1 for an epoch-end padding repeat */
    int64_t *datasets;      /* [n]: mixture component */
    char *keys;             /* [key_bytes] */
    uint8_t *meta;          /* [meta_bytes] */
    int64_t *meta_offsets;  /* [n + 1] */
} vlmdata_batch_buffers;

int32_t vlmdata_stream_copy(vlmdata_stream *stream, const vlmdata_batch_buffers *buffers, char *err,
                            size_t err_capacity);

/*
 * The image a vision tower takes, from one sample's patches: uint8 [tiles, (S/P)^2, P*P*3] (as the shards hold
 * them) -> float32 [tiles, 3, S, S] normalized with `normalize` ("clip", "siglip", "imagenet"; VLMImage's tables,
 * equal to CLIPImageProcessor's values), written to `out` (the caller's, tiles * 3 * S * S floats).
 */
int32_t vlmdata_patches_to_image(const uint8_t *patches, int64_t tiles, int64_t count, int64_t dim,
                                 const char *normalize, float *out, char *err, size_t err_capacity);

/*
 * A batch's images in one call: `patches[i]` points to sample i's uint8 [tiles, count, dim] (NULL: a zero image,
 * as LLaVA gives a text-only row) -> `out` float32 [n, tiles, 3, S, S] (the caller's), normalized as
 * vlmdata_patches_to_image does, one ctypes/FFI call per batch instead of one per image.
 */
int32_t vlmdata_images_fill(const uint8_t *const *patches, int64_t n, int64_t tiles, int64_t count, int64_t dim,
                            const char *normalize, float *out, char *err, size_t err_capacity);

#ifdef __cplusplus
}
#endif

#endif
