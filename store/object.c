/*
 * Object layer: LFS files stored under objects/ab/cd/<oid> with a 16-byte
 * header and a zstd payload (store/FORMAT.md). Uploads are verified against
 * their oid while they stream; downloads are verified before anyone sees them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "tp_store.h"

#define OBJ_MAGIC "TPKO"
#define OBJ_VERSION 1
#define ZSTD_LEVEL 3
#define FILE_CHUNK (1u << 20)

void tp_store_object_key(char out[TP_STORE_OBJECT_KEY_LEN + 1], const char *oid)
{
	memcpy(out, "objects/", 8);
	memcpy(out + 8, oid, 2);
	out[10] = '/';
	memcpy(out + 11, oid + 2, 2);
	out[13] = '/';
	memcpy(out + 14, oid, TP_OID_HEXLEN + 1);
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void header_write(unsigned char h[TP_STORE_OBJECT_HEADER_LEN], tp_store_kind kind,
			 uint64_t size)
{
	memcpy(h, OBJ_MAGIC, 4);
	h[4] = OBJ_VERSION;
	h[5] = (unsigned char)kind;
	h[6] = h[7] = 0;
	put_le64(h + 8, size);
}

static int header_parse(const unsigned char h[TP_STORE_OBJECT_HEADER_LEN], const char *oid,
			tp_store_kind *kind, uint64_t *size)
{
	if (memcmp(h, OBJ_MAGIC, 4) != 0)
		return tp_error_set(TP_ECORRUPT, "object %s: not a tenpak object (bad magic)", oid);
	if (h[4] != OBJ_VERSION)
		return tp_error_set(TP_EUNSUPPORTED, "object %s: format version %u is newer than "
				    "this tenpak understands", oid, h[4]);
	if (h[5] != TP_STORE_KIND_WHOLE_ZSTD && !TP_STORE_KIND_HAS_MANIFEST(h[5]))
		return tp_error_set(TP_EUNSUPPORTED, "object %s: unknown kind %u", oid, h[5]);
	*kind = (tp_store_kind)h[5];
	*size = get_le64(h + 8);
	return 0;
}

/* ---- upload: file -> header + zstd, verified on the way ----------------- */

typedef struct put_ctx {
	const char *oid;
	const char *path;
	uint64_t size;
	int fd;
	ZSTD_CCtx *cctx;
	unsigned char *in;
	ZSTD_inBuffer zin;
	bool in_eof;
	bool header_done;
	bool finished;
	uint64_t read_total;
	tp_sha256 sha;
	tp_progress_fn progress;
	void *progress_ctx;
} put_ctx;

/* All input read: the data must be exactly the object the oid names. */
static int put_verify(put_ctx *c)
{
	if (c->read_total != c->size)
		return tp_error_set(TP_ECORRUPT, "%s is %llu bytes, but the object %s should be %llu",
				    c->path, (unsigned long long)c->read_total, c->oid,
				    (unsigned long long)c->size);
	unsigned char d[TP_SHA256_LEN];
	char hex[TP_OID_HEXLEN + 1];
	tp_sha256_final(&c->sha, d);
	tp_sha256_hex(d, hex);
	if (strcmp(hex, c->oid) != 0)
		return tp_error_set(TP_ECORRUPT, "%s has sha256 %s, not the oid %s; refusing to "
				    "store it", c->path, hex, c->oid);
	return 0;
}

static int put_fill(put_ctx *c)
{
	size_t got;
	int rc = tp_fs_read_full(c->fd, c->in, FILE_CHUNK, &got);
	if (rc)
		return tp_error_wrap(rc, "reading %s", c->path);
	tp_sha256_update(&c->sha, c->in, got);
	c->read_total += got;
	c->zin = (ZSTD_inBuffer){ c->in, got, 0 };
	if (got < FILE_CHUNK) {
		c->in_eof = true;
		if ((rc = put_verify(c)) != 0)
			return rc;
	}
	if (c->progress && (rc = c->progress(c->progress_ctx, c->read_total, c->size)) != 0)
		return rc;
	return 0;
}

static int put_read(void *vctx, void *buf, size_t cap, size_t *got)
{
	put_ctx *c = vctx;
	ZSTD_outBuffer out = { buf, cap, 0 };
	*got = 0;
	if (!c->header_done) {
		/* Backends ask for at least a chunk; the header always fits. */
		if (cap < TP_STORE_OBJECT_HEADER_LEN)
			return tp_error_set(TP_EINVAL, "read buffer too small");
		header_write(buf, TP_STORE_KIND_WHOLE_ZSTD, c->size);
		out.pos = TP_STORE_OBJECT_HEADER_LEN;
		c->header_done = true;
	}
	while (!c->finished && out.pos < out.size) {
		if (c->zin.pos == c->zin.size && !c->in_eof) {
			int rc = put_fill(c);
			if (rc)
				return rc;
		}
		ZSTD_EndDirective mode = c->in_eof ? ZSTD_e_end : ZSTD_e_continue;
		size_t r = ZSTD_compressStream2(c->cctx, &out, &c->zin, mode);
		if (ZSTD_isError(r))
			return tp_error_set(TP_EIO, "zstd: %s", ZSTD_getErrorName(r));
		if (mode == ZSTD_e_end && r == 0)
			c->finished = true;
	}
	*got = out.pos;
	return 0;
}

int tp_store_object_put_file(tp_store *s, const char *oid, uint64_t size, const char *path,
			     tp_progress_fn progress, void *progress_ctx)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	put_ctx c = { .oid = oid, .path = path, .size = size, .fd = -1,
		      .progress = progress, .progress_ctx = progress_ctx };
	int rc = 0;
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "invalid oid");
	/* path comes from git-lfs: a FIFO or device there must not block us. */
	if ((rc = tp_fs_open_regular(path, &c.fd)) != 0)
		return rc;
	c.cctx = ZSTD_createCCtx();
	c.in = malloc(FILE_CHUNK);
	if (!c.cctx || !c.in) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	ZSTD_CCtx_setParameter(c.cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
	ZSTD_CCtx_setParameter(c.cctx, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setPledgedSrcSize(c.cctx, size);
	tp_sha256_init(&c.sha);
	tp_store_object_key(key, oid);
	tp_store_source src = { put_read, &c };
	rc = tp_store_put(s, key, &src);
done:
	ZSTD_freeCCtx(c.cctx);
	free(c.in);
	close(c.fd);
	return rc;
}

/* ---- download: header + zstd -> fd, verified ---------------------------- */

typedef struct get_ctx {
	const char *oid;
	uint64_t size;
	int fd;
	unsigned char header[TP_STORE_OBJECT_HEADER_LEN];
	size_t header_len;
	ZSTD_DCtx *dctx;
	unsigned char *out;
	size_t frame_left; /* last ZSTD_decompressStream hint; 0 = frame ended */
	uint64_t written;
	tp_sha256 sha;
	tp_progress_fn progress;
	void *progress_ctx;
} get_ctx;

static int get_header(get_ctx *c, const unsigned char **p, size_t *n)
{
	size_t take = TP_STORE_OBJECT_HEADER_LEN - c->header_len;
	if (take > *n)
		take = *n;
	memcpy(c->header + c->header_len, *p, take);
	c->header_len += take;
	*p += take;
	*n -= take;
	if (c->header_len < TP_STORE_OBJECT_HEADER_LEN)
		return 0;
	tp_store_kind kind;
	uint64_t size;
	int rc = header_parse(c->header, c->oid, &kind, &size);
	if (rc)
		return rc;
	if (size != c->size)
		return tp_error_set(TP_ECORRUPT, "object %s in the store is %llu bytes, expected %llu",
				    c->oid, (unsigned long long)size, (unsigned long long)c->size);
	if (kind != TP_STORE_KIND_WHOLE_ZSTD)
		return tp_error_set(TP_EINVAL, "object %s is a delta object, not a whole one", c->oid);
	return 0;
}

static int get_write(void *vctx, const void *data, size_t n)
{
	get_ctx *c = vctx;
	const unsigned char *p = data;
	int rc;
	if (c->header_len < TP_STORE_OBJECT_HEADER_LEN) {
		if ((rc = get_header(c, &p, &n)) != 0)
			return rc;
	}
	ZSTD_inBuffer in = { p, n, 0 };
	while (in.pos < in.size) {
		if (c->frame_left == 0)
			return tp_error_set(TP_ECORRUPT, "object %s: trailing bytes after its data",
					    c->oid);
		ZSTD_outBuffer out = { c->out, FILE_CHUNK, 0 };
		size_t r = ZSTD_decompressStream(c->dctx, &out, &in);
		if (ZSTD_isError(r))
			return tp_error_set(TP_ECORRUPT, "object %s: corrupt data (zstd: %s)", c->oid,
					    ZSTD_getErrorName(r));
		c->frame_left = r;
		if (out.pos > c->size - c->written)
			return tp_error_set(TP_ECORRUPT, "object %s: more data than its size", c->oid);
		tp_sha256_update(&c->sha, c->out, out.pos);
		if ((rc = tp_fs_write_all(c->fd, c->out, out.pos)) != 0)
			return tp_error_wrap(rc, "writing object %s", c->oid);
		c->written += out.pos;
		if (out.pos && c->progress &&
		    (rc = c->progress(c->progress_ctx, c->written, c->size)) != 0)
			return rc;
	}
	return 0;
}

int tp_store_object_get_fd(tp_store *s, const char *oid, uint64_t size, int fd,
			   tp_progress_fn progress, void *progress_ctx)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	get_ctx c = { .oid = oid, .size = size, .fd = fd, .frame_left = 1,
		      .progress = progress, .progress_ctx = progress_ctx };
	int rc = 0;
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "invalid oid");
	c.dctx = ZSTD_createDCtx();
	c.out = malloc(FILE_CHUNK);
	if (!c.dctx || !c.out) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	tp_sha256_init(&c.sha);
	tp_store_object_key(key, oid);
	tp_store_sink sink = { get_write, &c };
	if ((rc = tp_store_get(s, key, 0, UINT64_MAX, &sink)) != 0)
		goto done;
	if (c.header_len < TP_STORE_OBJECT_HEADER_LEN || c.frame_left != 0) {
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store is truncated", oid);
		goto done;
	}
	if (c.written != size) {
		rc = tp_error_set(TP_ECORRUPT, "object %s rebuilt to %llu bytes, expected %llu", oid,
				  (unsigned long long)c.written, (unsigned long long)size);
		goto done;
	}
	unsigned char d[TP_SHA256_LEN];
	char hex[TP_OID_HEXLEN + 1];
	tp_sha256_final(&c.sha, d);
	tp_sha256_hex(d, hex);
	if (strcmp(hex, oid) != 0)
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store rebuilt with sha256 %s: "
				  "the stored object is corrupt", oid, hex);
done:
	ZSTD_freeDCtx(c.dctx);
	free(c.out);
	return rc;
}

/* ---- metadata ------------------------------------------------------------ */

typedef struct head_ctx {
	unsigned char h[TP_STORE_OBJECT_HEADER_LEN];
	size_t len;
} head_ctx;

static int head_write(void *vctx, const void *data, size_t n)
{
	head_ctx *c = vctx;
	size_t take = n < sizeof(c->h) - c->len ? n : sizeof(c->h) - c->len;
	memcpy(c->h + c->len, data, take);
	c->len += take;
	return 0;
}

/* stored: the object's size in the store if already known (a listing
 * gives it), else UINT64_MAX to ask the backend. */
static int object_stat_key(tp_store *s, const char *key, const char *oid, uint64_t stored,
			   tp_store_object_info *info)
{
	head_ctx hc = { .len = 0 };
	tp_store_sink sink = { head_write, &hc };
	int rc = stored == UINT64_MAX ? tp_store_stat(s, key, &stored) : 0;
	if (rc)
		return rc;
	if ((rc = tp_store_get(s, key, 0, TP_STORE_OBJECT_HEADER_LEN, &sink)) != 0)
		return rc;
	if (hc.len < TP_STORE_OBJECT_HEADER_LEN)
		return tp_error_set(TP_ECORRUPT, "object %s in the store is truncated", oid);
	tp_store_kind kind;
	uint64_t size;
	if ((rc = header_parse(hc.h, oid, &kind, &size)) != 0)
		return rc;
	info->kind = kind;
	info->size = size;
	info->stored_size = stored;
	return 0;
}

int tp_store_object_stat(tp_store *s, const char *oid, tp_store_object_info *info)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "invalid oid");
	tp_store_object_key(key, oid);
	return object_stat_key(s, key, oid, UINT64_MAX, info);
}

/* ---- delta objects ---------------------------------------------------------- */

typedef struct delta_src {
	unsigned char head[TP_STORE_OBJECT_HEADER_LEN + 4];
	size_t head_len, head_pos;
	const char *manifest;
	size_t manifest_len, manifest_pos;
	int fd;
	const char *path;
	const tp_store_source *payload; /* instead of fd: a stream being made */
	uint64_t done, total;
	tp_progress_fn progress;
	void *progress_ctx;
} delta_src;

static size_t take(void *dst, size_t cap, const void *src, size_t len, size_t *pos)
{
	size_t n = len - *pos < cap ? len - *pos : cap;
	memcpy(dst, (const char *)src + *pos, n);
	*pos += n;
	return n;
}

static int delta_read(void *vctx, void *buf, size_t cap, size_t *got)
{
	delta_src *c = vctx;
	unsigned char *out = buf;
	size_t n = take(out, cap, c->head, c->head_len, &c->head_pos);
	n += take(out + n, cap - n, c->manifest, c->manifest_len, &c->manifest_pos);
	if (n < cap) {
		size_t r;
		int rc = c->payload ? c->payload->read(c->payload->ctx, out + n, cap - n, &r)
				    : tp_fs_read_full(c->fd, out + n, cap - n, &r);
		if (rc)
			return c->payload ? rc : tp_error_wrap(rc, "reading %s", c->path);
		n += r;
		c->done += r;
		if (r && c->progress && (rc = c->progress(c->progress_ctx, c->done, c->total)) != 0)
			return rc;
	}
	*got = n;
	return 0;
}

static int delta_start(delta_src *c, const char *oid, tp_store_kind kind, uint64_t size)
{
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "invalid oid");
	if (c->manifest_len > TP_STORE_MANIFEST_MAX)
		return tp_error_set(TP_ETOOBIG, "manifest of %s is too large", oid);
	if (!TP_STORE_KIND_HAS_MANIFEST(kind))
		return tp_error_set(TP_EINVAL, "kind %d has no manifest", kind);
	header_write(c->head, kind, size);
	for (int i = 0; i < 4; i++)
		c->head[TP_STORE_OBJECT_HEADER_LEN + i] = (unsigned char)(c->manifest_len >> (8 * i));
	c->head_len = sizeof(c->head);
	return 0;
}

int tp_store_object_put_delta(tp_store *s, const char *oid, uint64_t size, tp_store_kind kind,
			      const char *manifest,
			      const char *payload_path, tp_progress_fn progress, void *progress_ctx)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	delta_src c = { .manifest = manifest, .manifest_len = strlen(manifest), .path = payload_path,
			.progress = progress, .progress_ctx = progress_ctx };
	int rc = delta_start(&c, oid, kind, size);
	if (rc)
		return rc;
	c.fd = open(payload_path, O_RDONLY | O_CLOEXEC);
	if (c.fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", payload_path);
	struct stat st;
	c.total = fstat(c.fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	tp_store_object_key(key, oid);
	tp_store_source src = { delta_read, &c };
	rc = tp_store_put(s, key, &src);
	close(c.fd);
	return rc;
}

int tp_store_object_put_delta_stream(tp_store *s, const char *oid, uint64_t size,
				     tp_store_kind kind, const char *manifest,
				     const tp_store_source *payload)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	delta_src c = { .manifest = manifest, .manifest_len = strlen(manifest), .fd = -1,
			.payload = payload };
	int rc = delta_start(&c, oid, kind, size);
	if (rc)
		return rc;
	tp_store_object_key(key, oid);
	tp_store_source src = { delta_read, &c };
	return tp_store_put(s, key, &src);
}

typedef struct buf_sink {
	tp_buf *b;
} buf_sink;

static int buf_write(void *vctx, const void *data, size_t n)
{
	buf_sink *c = vctx;
	return tp_buf_add(c->b, data, n);
}

int tp_store_object_manifest(tp_store *s, const char *oid, tp_store_object_info *info,
			     char **manifest)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	tp_buf b = TP_BUF_INIT(TP_STORE_MANIFEST_MAX);
	buf_sink bs = { &b };
	tp_store_sink sink = { buf_write, &bs };
	int rc = tp_store_object_stat(s, oid, info);
	*manifest = NULL;
	if (rc || !TP_STORE_KIND_HAS_MANIFEST(info->kind))
		return rc;
	tp_store_object_key(key, oid);
	if ((rc = tp_store_get(s, key, TP_STORE_OBJECT_HEADER_LEN, 4, &sink)) != 0)
		goto done;
	if (b.len < 4) {
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store is truncated", oid);
		goto done;
	}
	uint32_t len = (uint32_t)(unsigned char)b.ptr[0] | (uint32_t)(unsigned char)b.ptr[1] << 8 |
		       (uint32_t)(unsigned char)b.ptr[2] << 16 | (uint32_t)(unsigned char)b.ptr[3] << 24;
	if (len == 0 || len > TP_STORE_MANIFEST_MAX ||
	    TP_STORE_OBJECT_HEADER_LEN + 4 + (uint64_t)len > info->stored_size) {
		rc = tp_error_set(TP_ECORRUPT, "object %s: manifest length %u is out of range", oid, len);
		goto done;
	}
	tp_buf_reset(&b);
	if ((rc = tp_store_get(s, key, TP_STORE_OBJECT_HEADER_LEN + 4, len, &sink)) != 0)
		goto done;
	if (b.len != len || memchr(b.ptr, '\0', b.len)) {
		rc = tp_error_set(TP_ECORRUPT, "object %s: unreadable manifest", oid);
		goto done;
	}
	info->payload_offset = TP_STORE_OBJECT_HEADER_LEN + 4 + (uint64_t)len;
	*manifest = tp_buf_detach(&b);
done:
	tp_buf_free(&b);
	return rc;
}

typedef struct fd_sink {
	int fd;
} fd_sink;

static int fd_write(void *vctx, const void *data, size_t n)
{
	fd_sink *c = vctx;
	return tp_fs_write_all(c->fd, data, n);
}

int tp_store_object_get_payload(tp_store *s, const char *oid, const tp_store_object_info *info,
				int fd)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	fd_sink fs = { fd };
	tp_store_sink sink = { fd_write, &fs };
	if (!tp_oid_valid(oid) || !TP_STORE_KIND_HAS_MANIFEST(info->kind) || !info->payload_offset)
		return tp_error_set(TP_EINVAL, "object %s has no delta payload", oid);
	tp_store_object_key(key, oid);
	return tp_store_get(s, key, info->payload_offset, UINT64_MAX, &sink);
}

typedef struct list_ctx {
	int (*fn)(void *ctx, const char *oid, uint64_t stored);
	void *ctx;
} list_ctx;

static int list_visit(void *vctx, const char *key, uint64_t size)
{
	list_ctx *c = vctx;
	char expect[TP_STORE_OBJECT_KEY_LEN + 1];
	const char *oid = strrchr(key, '/');
	oid = oid ? oid + 1 : key;
	if (!tp_oid_valid(oid))
		return 0;
	tp_store_object_key(expect, oid);
	return strcmp(expect, key) == 0 ? c->fn(c->ctx, oid, size) : 0;
}

int tp_store_object_list(tp_store *s, int (*fn)(void *ctx, const char *oid, uint64_t stored),
			 void *ctx)
{
	list_ctx c = { fn, ctx };
	return tp_store_list(s, "objects/", list_visit, &c);
}

/* ---- totals -------------------------------------------------------------- */

typedef struct stats_ctx {
	tp_store *store;
	tp_store_stats st;
} stats_ctx;

static int stats_visit(void *vctx, const char *oid, uint64_t stored)
{
	stats_ctx *c = vctx;
	tp_store_object_info info = { 0 };
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	tp_store_object_key(key, oid);
	if (object_stat_key(c->store, key, oid, stored, &info) != 0) {
		c->st.unreadable++;
		return 0;
	}
	tp_store_kind_stats *k = info.kind == TP_STORE_KIND_DELTA ? &c->st.delta : &c->st.whole;
	c->st.objects++;
	c->st.logical_bytes += info.size;
	c->st.physical_bytes += info.stored_size;
	k->objects++;
	k->logical_bytes += info.size;
	k->physical_bytes += info.stored_size;
	return 0;
}

int tp_store_stats_collect(tp_store *s, tp_store_stats *out)
{
	stats_ctx c = { .store = s };
	int rc = tp_store_object_list(s, stats_visit, &c);
	if (rc)
		return rc;
	*out = c.st;
	return 0;
}
