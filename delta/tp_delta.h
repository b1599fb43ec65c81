/*
 * tenpak delta: safetensors reader and the lossless tensor-wise delta codec.
 *
 * A delta rebuilds a target file bit-exactly from one or more base files.
 * Tensors are matched by name (same dtype and shape), transformed against
 * their base (XOR or difference in ULP space), split into byte planes and
 * coded with zstd in independent chunks. The on-disk format is described in
 * delta/FORMAT.md.
 *
 * All functions return 0 or a negative TP_E* code and set tp_error_last().
 */
#ifndef TP_DELTA_H
#define TP_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* ---- dtypes ------------------------------------------------------------ */

typedef enum tp_dtype {
	TP_DTYPE_F64,
	TP_DTYPE_F32,
	TP_DTYPE_F16,
	TP_DTYPE_BF16,
	TP_DTYPE_I64,
	TP_DTYPE_I32,
	TP_DTYPE_I16,
	TP_DTYPE_I8,
	TP_DTYPE_U8,
	TP_DTYPE_BOOL,
	TP_DTYPE_F8_E4M3,
	TP_DTYPE_F8_E5M2,
	TP_DTYPE_COUNT
} tp_dtype;

/* Spec spelling ("BF16"); "?" for an invalid value. */
const char *tp_dtype_name(tp_dtype d);
/* TP_ENOTFOUND for an unknown name. */
int tp_dtype_from_name(const char *name, tp_dtype *out);
/* Element size in bytes. */
unsigned tp_dtype_size(tp_dtype d);
bool tp_dtype_is_float(tp_dtype d);

/* ---- safetensors ------------------------------------------------------- */

#define TP_ST_MAX_DIMS 16
/* Largest JSON header accepted (the reference implementation uses 100 MB). */
#define TP_ST_HEADER_MAX (100u * 1000u * 1000u)
#define TP_ST_MAX_TENSORS 1000000u

typedef struct tp_st_tensor {
	char *name;
	tp_dtype dtype;
	unsigned ndim;
	uint64_t shape[TP_ST_MAX_DIMS];
	uint64_t offset; /* absolute file offset of the first data byte */
	uint64_t size;   /* bytes */
} tp_st_tensor;

typedef struct tp_safetensors {
	uint64_t file_size;
	uint64_t data_start; /* 8 + JSON header length */
	size_t ntensors;
	tp_st_tensor *tensors; /* sorted by offset */
	size_t nmeta;          /* __metadata__ string pairs */
	char **meta_keys;
	char **meta_values;
} tp_safetensors;

/*
 * Length of the whole header (8 + JSON) from the file's first 8 bytes;
 * TP_ECORRUPT if it is capped or does not fit in file_size.
 */
int tp_safetensors_header_size(const unsigned char first8[8], uint64_t file_size,
			       uint64_t *out);
/*
 * Parse a header held in memory: head holds the first head_len bytes of a
 * file of file_size bytes (head_len must cover the whole header). No I/O, so
 * it can be fuzzed. Rejects bad JSON, unknown dtypes, absurd or overflowing
 * shapes, and data_offsets that are out of range, overlap or disagree with
 * the shape.
 */
int tp_safetensors_parse(tp_safetensors **out, const void *head, size_t head_len,
			 uint64_t file_size);
int tp_safetensors_open(tp_safetensors **out, const char *path);
void tp_safetensors_free(tp_safetensors *st);
/* NULL when absent. */
const tp_st_tensor *tp_safetensors_find(const tp_safetensors *st, const char *name);
/* True when path ends in ".index.json" (a sharded model's index). */
bool tp_safetensors_is_index(const char *path);
/* Most distinct shard files an index may list (real models: a few thousand). */
#define TP_ST_INDEX_MAX_SHARDS 16384u
/*
 * Parse the text of a model.safetensors.index.json (len bytes, any bytes):
 * the distinct shard file names its weight_map lists, in first-seen order.
 * Pure (no I/O) so that every reader of an index uses it and it can be
 * fuzzed. TP_ECORRUPT for bad JSON, no or an empty weight_map, a value that
 * is not a string, or a name that is not a plain file name ("", ".", "..",
 * anything with '/'); TP_ETOOBIG past TP_ST_INDEX_MAX_SHARDS names. Free the
 * list with tp_safetensors_shards_free.
 */
int tp_safetensors_index_parse(const char *json, size_t len, char ***out, size_t *n_out);
/*
 * Read a model.safetensors.index.json file and list its distinct shard files
 * (joined to the index's directory, in first-seen order).
 */
int tp_safetensors_index_shards(char ***out, size_t *n_out, const char *index_path);
void tp_safetensors_shards_free(char **paths, size_t n);

/* ---- delta codec ------------------------------------------------------- */

/* The format version a delta is written in unless it uses a version-2
 * feature (qgrid); this build reads versions 1 to TP_DELTA_VERSION_MAX. */
#define TP_DELTA_VERSION 1
#define TP_DELTA_VERSION_MAX 2
#define TP_DELTA_CHUNK_DEFAULT (1u << 20)
#define TP_DELTA_CHUNK_MIN (64u << 10)
#define TP_DELTA_CHUNK_MAX (16u << 20)
#define TP_DELTA_LEVEL_DEFAULT 1

/* How a segment of the target is coded (values are stored in the format). */
typedef enum tp_delta_xform {
	TP_DELTA_XFORM_AUTO = 0,   /* options only: choose per tensor */
	TP_DELTA_XFORM_PLAIN = 1,  /* bytes as one plane (header, gaps, ints) */
	TP_DELTA_XFORM_PLANES = 2, /* float byte planes, no base */
	TP_DELTA_XFORM_XOR = 3,    /* XOR with base, float byte planes */
	TP_DELTA_XFORM_ULP = 4,    /* zigzag ULP difference, byte planes */
	TP_DELTA_XFORM_QGRID = 5,  /* v2: per-row scale, codes, ULP residual */
} tp_delta_xform;

const char *tp_delta_xform_name(tp_delta_xform x);

/* Write all n bytes or fail. */
typedef int (*tp_delta_write_fn)(void *ctx, const void *buf, size_t n);
/* Read up to n bytes; *got < n only at end of stream. */
typedef int (*tp_delta_read_fn)(void *ctx, void *buf, size_t n, size_t *got);

/* Adapters for plain file descriptors: ctx points to an int fd. */
int tp_delta_fd_write(void *ctx, const void *buf, size_t n);
int tp_delta_fd_read(void *ctx, void *buf, size_t n, size_t *got);

/* A file that will be fsync'd at the end: tp_delta_durable_write starts
 * the kernel's writeback as it goes (tp_fs_start_writeback), so the final
 * fsync waits for the last few MiB instead of the whole file. */
typedef struct tp_delta_durable {
	int fd;
	uint64_t written, flushed; /* bytes written; bytes whose writeback has started */
	/* Final size when the caller knows it (an LFS object's), reserved on
	 * the first write; 0: unknown. */
	uint64_t size;
} tp_delta_durable;
int tp_delta_durable_write(void *ctx, const void *buf, size_t n);

typedef struct tp_delta_opts {
	unsigned threads;  /* 0: all online cores */
	int level;         /* zstd level; 0: TP_DELTA_LEVEL_DEFAULT */
	size_t chunk_size; /* 0: TP_DELTA_CHUNK_DEFAULT; a multiple of 8 */
	/* Force XOR or ULP for matched float tensors (experiments); AUTO
	 * picks the smallest of XOR, ULP and no base per tensor. */
	tp_delta_xform force_xform;
	/* Called, in order, with the bytes of target (compress) or output
	 * (apply) done so far, once per chunk. A non-zero return stops the
	 * work promptly: worker threads are joined, a temporary output is
	 * removed, and the call returns that code (with the callback's
	 * message, or "stopped by the caller" when it set none). */
	tp_progress_fn progress;
	void *progress_ctx;
	/* apply: when nonzero, the size the rebuilt file must have. Checked
	 * against the plan before anything is written: segments may reuse one
	 * base range, so a small hostile delta can claim terabytes. */
	uint64_t expect_size;
	/* compress: prove each frame right after it is encoded, while its
	 * bytes are in cache: decode it as apply would (the plan parsed back
	 * from its JSON, each base found by size and fingerprint) and compare
	 * with the target chunk. TP_ECORRUPT on any difference. With the
	 * sha256 in stats and the bases' identity checked by the caller, this
	 * proves the stream rebuilds the target without a second pass. */
	bool verify;
	/* compress: when non-NULL, receives the sha256 of each base file (one
	 * entry per base given), hashed whole and in order by the encode jobs
	 * alongside the target, so a caller can check its bases against their
	 * oids without a pass of its own. */
	unsigned char (*base_sha256)[32];
	/* estimate: code 1 chunk in this many of each kind of segment (at
	 * least 4 of a kind, or all of them when fewer); 0: 8. */
	unsigned estimate_stride;
	/* compress: the plan tp_delta_estimate made of the same target and
	 * bases with the same options, coded by instead of planning again
	 * (sampling each tensor's transforms, a serial part of compress).
	 * Used only if it fits the files (sizes, each base's fingerprint). */
	const struct tp_delta_layout *plan;
} tp_delta_opts;

typedef struct tp_delta_stats {
	uint64_t target_bytes; /* bytes of the rebuilt file */
	uint64_t delta_bytes;  /* bytes of the delta stream */
	double seconds;
	/* sha256 of the target: hashed while compressing, or checked against
	 * the delta's record while applying */
	unsigned char sha256[32];
	uint32_t version; /* the delta's format version (compress) */
} tp_delta_stats;

typedef struct tp_delta_base_info {
	char *name; /* file name the base had when the delta was made */
	uint64_t size;
	char fingerprint[65]; /* hex sha256 over the header and sampled blocks */
} tp_delta_base_info;

typedef struct tp_delta_seg_info {
	char *name;             /* tensor name; NULL for bytes outside tensors */
	tp_dtype dtype;         /* meaningful only when name != NULL */
	tp_delta_xform xform;
	uint64_t offset, size;  /* range in the target file */
	int base;               /* index into bases, -1 when unmatched */
	uint64_t base_offset;
	uint64_t row;           /* qgrid: elements per row; 0 otherwise */
	uint64_t chunks;
	uint64_t same_chunks;   /* chunks equal to their base: no payload */
	uint64_t stored_bytes;  /* frames' bytes (an estimate from estimate) */
} tp_delta_seg_info;

/* A delta's layout: its bases and the target's segments, each with the
 * bytes its frames take. Not the store's manifest (tp_store_manifest), which
 * names an object's bases by oid. */
typedef struct tp_delta_layout {
	uint32_t version;
	uint64_t target_size;
	uint64_t chunk_size;
	unsigned char sha256[32]; /* of the target (zero from estimate) */
	uint64_t delta_size;      /* whole stream (estimated by estimate) */
	size_t nbases;
	tp_delta_base_info *bases;
	size_t nsegs;
	tp_delta_seg_info *segs;
} tp_delta_layout;

/*
 * Write a delta that rebuilds target from bases (none: no-base mode).
 * A base path ending in .index.json stands for its shards. A target that
 * is not safetensors is coded as opaque bytes.
 */
int tp_delta_compress(const char *target, const char *const *bases, size_t nbases,
		      tp_delta_write_fn write, void *write_ctx,
		      const tp_delta_opts *opts, tp_delta_stats *stats);
/* tp_delta_compress into a file, written to a temporary and renamed. */
int tp_delta_compress_file(const char *target, const char *const *bases, size_t nbases,
			   const char *out_path, const tp_delta_opts *opts,
			   tp_delta_stats *stats);
/*
 * Rebuild the target from a delta stream, writing it sequentially to out_fd.
 * Bases may be given in any order; each is identified by its fingerprint.
 * Returns TP_ECORRUPT when the rebuilt bytes do not hash to the recorded
 * sha256: the caller must then discard what was written.
 */
int tp_delta_apply(tp_delta_read_fn read, void *read_ctx,
		   const char *const *bases, size_t nbases, int out_fd,
		   const tp_delta_opts *opts, tp_delta_stats *stats);
/* tp_delta_apply with the output handed to write, in order. A NULL write
 * only checks the delta: the rebuilt bytes are hashed (stats->sha256) and
 * dropped, so nothing is opened or written. */
int tp_delta_apply_to(tp_delta_read_fn read, void *read_ctx,
		      const char *const *bases, size_t nbases, tp_delta_write_fn write,
		      void *write_ctx, const tp_delta_opts *opts, tp_delta_stats *stats);
/* tp_delta_apply into a temporary next to out_path, renamed only if the
 * sha256 matched; out_path is untouched on any failure. */
int tp_delta_apply_file(const char *delta_path, const char *const *bases, size_t nbases,
			const char *out_path, const tp_delta_opts *opts,
			tp_delta_stats *stats);
/*
 * Predict the delta's size by coding a sample of each tensor's chunks.
 * The layout's stored_bytes and delta_size are estimates.
 */
int tp_delta_estimate(tp_delta_layout **out, const char *target,
		      const char *const *bases, size_t nbases, const tp_delta_opts *opts);
/* Read a delta's plan and scan its frames for per-segment sizes. */
int tp_delta_inspect(tp_delta_layout **out, tp_delta_read_fn read, void *read_ctx);
void tp_delta_layout_free(tp_delta_layout *m);
/* The layout with sizes as pretty JSON (for inspect/estimate --json). */
int tp_delta_layout_to_json(const tp_delta_layout *m, char **out);

#endif
