/* Internals shared by the delta sources; not installed. */
#ifndef TP_DELTA_INTERNAL_H
#define TP_DELTA_INTERNAL_H

#include "tp_delta.h"

#include "tp_array.h"
#include "tp_common.h"

#include <stdint.h>
#include <zstd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tenpak delta assumes a little-endian host"
#endif

/* ---- chunk codec (pure: buffers in, buffers out) ----------------------- */

#define TP_DELTA_FRAME_CHUNK 0x43 /* 'C' */
#define TP_DELTA_FRAME_END 0x45   /* 'E' */
#define TP_DELTA_FLAG_SAME 0x01
#define TP_DELTA_CHUNK_HDR 16
#define TP_DELTA_PLANE_HDR 8
#define TP_DELTA_END_LEN 48
#define TP_DELTA_MAX_PLANES 8
#define TP_DELTA_METHOD_STORED 0
#define TP_DELTA_METHOD_ZSTD 1
#define TP_DELTA_METHOD_RANS 2
#define TP_DELTA_FLAG_QGRID 0x02 /* format v2: a qgrid-coded chunk */

/* count[s] = occurrences of byte s in src[n]. */
void tp_delta_histogram(const uint8_t *src, size_t n, uint32_t count[256]);
/* Whether a zstd block of a grouped float plane is coded as literals only
 * (no match search): n bytes of one skewed distribution that chance matches
 * would cost more than they save (codec.c). */
bool tp_delta_literal_block(const uint8_t *src, size_t n);
/* Static order-0 rANS for skewed planes (rans.c). */
size_t tp_rans_estimate(const uint32_t count[256], size_t n);
/* Encoded size, or 0 when n is 0 or cap < TP_RANS_BOUND(n). */
#define TP_RANS_BOUND(n) (2 * (size_t)(n) + 32 + 512 + 8)
size_t tp_rans_encode(const uint8_t *src, size_t n, const uint32_t count[256], uint8_t *dst,
		      size_t cap);
int tp_rans_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t n);

/* Per-worker scratch. */
typedef struct tp_chunk_coder {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	uint8_t *planes; /* chunk_size bytes */
	uint8_t *rans;   /* TP_RANS_BOUND(chunk_size) bytes */
	size_t cap;
	/* qgrid only, allocated at first use: its planes (3 * cap + 64 bytes)
	 * and the frame it is coded into before it is compared with ulp's. */
	uint8_t *qbuf, *qframe;
	size_t qframe_cap;
} tp_chunk_coder;

int tp_chunk_coder_init(tp_chunk_coder *c, size_t chunk_size);
void tp_chunk_coder_fini(tp_chunk_coder *c);

/* What one chunk of a segment needs to be coded. */
typedef struct tp_chunk_desc {
	tp_delta_xform xform;
	unsigned width;     /* element bytes; 1 for PLAIN */
	uint32_t seg, index;
	const uint8_t *target; /* NULL when decoding */
	const uint8_t *base;   /* NULL when unmatched */
	size_t len;            /* target bytes, a multiple of width */
	/* qgrid only: the segment's dtype, row length (elements) and the
	 * index within the segment of the chunk's first element. */
	tp_dtype dtype;
	uint64_t row, first;
} tp_chunk_desc;

/* Number of planes a segment is split into. */
unsigned tp_delta_nplanes(tp_delta_xform x, unsigned width);
/* Transform and split len bytes into plane-major planes[len]. Returns true
 * when the target equals the base (every transformed word is zero). */
bool tp_delta_split(tp_delta_xform x, unsigned width, const uint8_t *tgt,
		    const uint8_t *base, size_t len, uint8_t *planes);
/* Inverse of tp_delta_split. */
void tp_delta_merge(tp_delta_xform x, unsigned width, const uint8_t *planes,
		    const uint8_t *base, size_t len, uint8_t *tgt);
/* The same, element by element for any width: the reference the fast
 * paths are tested against (test_codec.c). */
bool tp_delta_split_ref(tp_delta_xform x, unsigned width, const uint8_t *tgt,
			const uint8_t *base, size_t len, uint8_t *planes);
void tp_delta_merge_ref(tp_delta_xform x, unsigned width, const uint8_t *planes,
			const uint8_t *base, size_t len, uint8_t *tgt);
/* Fast paths for 2-byte elements (planes16.c), n elements, x not PLAIN. */
bool tp_delta_split16(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base, size_t n,
		      uint8_t *planes);
void tp_delta_merge16(tp_delta_xform x, const uint8_t *planes, const uint8_t *base, size_t n,
		      uint8_t *tgt);

/* Whether split16/merge16 may use their SIMD kernels where the CPU has them
 * (default yes); returns whether they now do. Tests switch them off to
 * check the portable path too; call it before any worker starts. */
bool tp_delta_simd16_allow(bool allow);

/* Largest frame a chunk of chunk_size bytes can encode to. */
size_t tp_chunk_frame_bound(size_t chunk_size);
/* Encode one chunk frame into out[cap] (cap >= tp_chunk_frame_bound). */
int tp_chunk_encode(tp_chunk_coder *c, const tp_chunk_desc *d, int level, uint8_t *out,
		    size_t cap, size_t *out_len);
/* Size of a chunk frame's header and plane table, from its first 4 bytes;
 * TP_ECORRUPT for a bad type or plane count. */
int tp_chunk_head_size(const uint8_t *first4, size_t *out);
/* Parse the header: seg, index, len, flags and total frame size. */
typedef struct tp_chunk_head {
	uint8_t flags;
	unsigned nplanes;
	uint32_t seg, index, len;
	uint8_t method[TP_DELTA_MAX_PLANES];
	uint32_t stored[TP_DELTA_MAX_PLANES];
	size_t frame_size; /* header + table + payloads */
} tp_chunk_head;
int tp_chunk_head_parse(tp_chunk_head *h, const uint8_t *buf, size_t len);
/* Decode a whole frame (validated against d) into out[d->len]. */
int tp_chunk_decode(tp_chunk_coder *c, const tp_chunk_desc *d, const uint8_t *frame,
		    size_t frame_len, uint8_t *out);
/* One plane of n bytes with the smallest of zstd, rANS and stored. */
int tp_chunk_encode_plane(tp_chunk_coder *c, tp_delta_xform x, int level, const uint8_t *src,
			  size_t n, uint8_t *dst, size_t cap, uint8_t *method, size_t *len);
int tp_chunk_decode_plane(tp_chunk_coder *c, uint8_t method, const uint8_t *src, size_t stored,
			  uint8_t *dst, size_t n);

/* ---- qgrid (qgrid.c, format v2): BF16/F16 rows of base + code * scale --- */

#define TP_QGRID_PLANES 4 /* codes, residual high and low bytes, scales */
/* qgrid is chosen for a tensor when its sample costs less than this
 * fraction of the best base transform's. */
#define TP_QGRID_MARGIN 0.97
/* Row scales in a chunk of n elements starting at element first of its
 * segment, for rows of row elements. */
size_t tp_qgrid_nscales(uint64_t first, size_t n, uint64_t row);
void tp_qgrid_plane_sizes(size_t n, uint64_t first, uint64_t row,
			  size_t sizes[TP_QGRID_PLANES]);
/* Exact conversions, rounding to nearest even (FORMAT.md). */
float tp_qgrid_to_f32(tp_dtype dt, uint16_t h);
uint16_t tp_qgrid_from_f32(tp_dtype dt, float f);
/* n elements into the planes, concatenated (3n + 4 * nscales bytes). */
int tp_qgrid_split(tp_dtype dt, const uint8_t *tgt, const uint8_t *base, size_t n,
		   uint64_t first, uint64_t row, uint8_t *planes);
/* Inverse; TP_ECORRUPT for a scale that is not finite. */
int tp_qgrid_merge(tp_dtype dt, const uint8_t *planes, const uint8_t *base, size_t n,
		   uint64_t first, uint64_t row, uint8_t *tgt);
/* A qgrid frame for d into c->qframe (*out_len bytes). */
int tp_qgrid_encode(tp_chunk_coder *c, const tp_chunk_desc *d, int level, size_t *out_len);
/* Decode a frame whose header h has the QGRID flag. */
int tp_qgrid_decode(tp_chunk_coder *c, const tp_chunk_desc *d, const tp_chunk_head *h,
		    const uint8_t *frame, uint8_t *out);
/* Whether a sample of len bytes of a matched tensor codes smaller as
 * qgrid than as ulp or xor (by TP_QGRID_MARGIN). */
bool tp_qgrid_worth(tp_chunk_coder *c, tp_dtype dt, const uint8_t *t, const uint8_t *b,
		    size_t len, uint64_t first, uint64_t row);
/* Whether to code a matched tensor as qgrid (force AUTO: when a sample
 * says it pays; QGRID: whenever it can); *row set when true. */
bool tp_qgrid_choose(tp_chunk_coder *c, const tp_st_tensor *t, const uint8_t *tgt,
		     const uint8_t *base, tp_delta_xform force, uint64_t *row);

/* ---- plan: the JSON layout at the start of a delta --------------------- */

/* Serialize m (without sizes) as the plan; *out malloc'd. */
int tp_delta_plan_write(const tp_delta_layout *m, char **out, size_t *len);
int tp_delta_plan_parse(tp_delta_layout **out, const char *json, size_t len);
unsigned tp_delta_seg_width(const tp_delta_seg_info *s);
uint64_t tp_delta_seg_chunks(const tp_delta_seg_info *s, uint64_t chunk_size);

/* ---- read-only file mappings whose pages can be released --------------- */

typedef struct tp_map {
	const uint8_t *ptr; /* NULL for an empty file */
	uint64_t size;
	char *path;
} tp_map;

int tp_map_open(tp_map *m, const char *path);
/* Drop the pages of [off, off+len) from our RSS; they refault if touched. */
void tp_map_release(const tp_map *m, uint64_t off, uint64_t len);
void tp_map_close(tp_map *m);
/* Hex sha256 of the size, the first 64 KiB and 16 sampled 4 KiB blocks. */
void tp_map_fingerprint(const tp_map *m, char out[65]);

/* ---- ordered worker pool ------------------------------------------------ */

/* Jobs are numbered 0, 1, ...; job i lives in slot i % window and is
 * processed by any worker; the caller collects results in order. */
typedef int (*tp_pipe_fn)(void *ctx, size_t slot, unsigned worker);
typedef struct tp_pipe tp_pipe;

/* threads <= 1 runs each job inline in tp_pipe_submit. */
int tp_pipe_new(tp_pipe **out, unsigned threads, size_t window, tp_pipe_fn fn, void *ctx);
unsigned tp_pipe_workers(const tp_pipe *p);
size_t tp_pipe_window(const tp_pipe *p);
void tp_pipe_submit(tp_pipe *p, uint64_t job);
/* Wait for job (submitted, not yet collected); returns its fn's result. */
int tp_pipe_wait(tp_pipe *p, uint64_t job);
/* A pipe whose jobs also have an ordered stage: ordered(slot) runs once per
 * job, in job order, after its fn succeeded, on whichever worker finds it
 * next in line (none waits for its turn); tp_pipe_wait then returns the
 * stage's result. threads is the number of worker threads; 0 runs both
 * inline in tp_pipe_submit. After a failed fn or stage, later stages are
 * skipped (their jobs still report their fn's result). */
int tp_pipe_new_ordered(tp_pipe **out, unsigned threads, size_t window, tp_pipe_fn fn,
			tp_pipe_fn ordered, void *ctx);
void tp_pipe_free(tp_pipe *p);
unsigned tp_delta_default_threads(void);

/* ---- shared by compress, estimate and apply ----------------------------- */

/* One base file, mapped. */
typedef struct tp_base {
	tp_map map;
	tp_safetensors *st; /* NULL when the base is not safetensors */
} tp_base;

/* Bases expanded from index files: ptr[0..len). */
typedef tp_array(tp_base) tp_base_set;

int tp_base_set_open(tp_base_set *b, const char *const *paths, size_t n);
void tp_base_set_close(tp_base_set *b);

void tp_le32(uint8_t *p, uint32_t v);
void tp_le64(uint8_t *p, uint64_t v);
uint32_t tp_rd32(const uint8_t *p);
uint64_t tp_rd64(const uint8_t *p);

#endif
