/* Sparse deltas (tp_optimize.h, "sparse deltas"): keep part of a
 * fine-tune's update, quantized, on top of its base, and measure what that
 * costs in quality and what the delta codec then stores. */
#include "quant_internal.h"
#include "tp_delta.h"
#include "tp_optimize.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTX_DEFAULT 512
#define CARD_MAX (16u << 20)
#define COPY_BLOCK (1u << 20)
/* Bisection stops when the passing and failing densities are this close
 * (ratio), or after TP_SPARSIFY_MAX_STEPS measurements. */
#define SEARCH_RATIO 1.12
#define SEARCH_LO 0.001

static const char *const select_names[] = { "magnitude", "activation", "dare" };

const char *tp_optimize_sparsify_select_name(tp_sparsify_select s)
{
	return (unsigned)s < sizeof(select_names) / sizeof(select_names[0]) ? select_names[s] : "?";
}

int tp_optimize_sparsify_select_from_name(const char *name, tp_sparsify_select *out)
{
	for (size_t i = 0; i < sizeof(select_names) / sizeof(select_names[0]); i++)
		if (strcmp(name, select_names[i]) == 0) {
			*out = (tp_sparsify_select)i;
			return 0;
		}
	return tp_error_set(TP_ENOTFOUND, "unknown selection '%s' (magnitude, activation, dare)",
			    name);
}

/* ---- one tensor ------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

/* The k-th largest of n non-negative scores (1 <= k <= n) as its bit
 * pattern, which orders non-negative floats like their values: two passes
 * of a 16-bit radix histogram, no sort and no copy. */
static int kth_largest_bits(const float *s, size_t n, uint64_t k, uint32_t *out)
{
	uint64_t *h = calloc(65536, sizeof(*h));
	if (!h)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		h[float_bits(s[i]) >> 16]++;
	uint64_t above = 0;
	uint32_t hi = 65535;
	for (;; hi--) {
		if (above + h[hi] >= k || hi == 0)
			break;
		above += h[hi];
	}
	memset(h, 0, 65536 * sizeof(*h));
	for (size_t i = 0; i < n; i++) {
		uint32_t u = float_bits(s[i]);
		if (u >> 16 == hi)
			h[u & 0xffff]++;
	}
	uint32_t lo = 65535;
	for (;; lo--) {
		if (above + h[lo] >= k || lo == 0)
			break;
		above += h[lo];
	}
	free(h);
	*out = hi << 16 | lo;
	return 0;
}

/* Round v to the grid {-qmax..qmax} * scale. */
static float quant_one(float v, float scale, float qmax)
{
	float q = roundf(v / scale);
	q = q > qmax ? qmax : q < -qmax ? -qmax : q;
	return q * scale;
}

/* The row's scale: its largest |kept value| / qmax, or for few bits the
 * clipped one with the least squared error (a 3-level grid spent on the
 * single largest value leaves most others at 0). */
static float row_scale(const float *v, const unsigned char *keep, size_t cols, unsigned bits,
		       float qmax)
{
	float amax = 0;
	for (size_t j = 0; j < cols; j++)
		if (keep[j] && fabsf(v[j]) > amax)
			amax = fabsf(v[j]);
	if (amax == 0 || bits > 4)
		return amax / qmax;
	float best = amax / qmax;
	double best_err = INFINITY;
	for (int r = 20; r >= 6; r--) {
		float scale = amax * (float)r / 20.0f / qmax;
		double err = 0;
		for (size_t j = 0; j < cols; j++)
			if (keep[j]) {
				double e = (double)quant_one(v[j], scale, qmax) - v[j];
				err += e * e;
			}
		if (err < best_err) {
			best_err = err;
			best = scale;
		}
	}
	return best;
}

int tp_optimize_sparsify_delta(float *d, size_t rows, size_t cols, const float *col_norm,
			       tp_sparsify_select select, double density, unsigned bits,
			       uint64_t seed, tp_sparsify_tensor_stats *stats)
{
	if (!(density > 0 && density <= 1) || bits < TP_SPARSIFY_BITS_MIN ||
	    bits > TP_SPARSIFY_BITS_MAX || (unsigned)select > TP_SPARSIFY_SELECT_DARE)
		return tp_error_set(TP_EINVAL, "sparsify: density must be in (0, 1] and bits in "
				    "[%d, %d]", TP_SPARSIFY_BITS_MIN, TP_SPARSIFY_BITS_MAX);
	if (cols && rows > SIZE_MAX / cols)
		return tp_error_set(TP_ETOOBIG, "sparsify: %zu x %zu entries", rows, cols);
	size_t n = rows * cols;
	uint64_t nonzero = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(d[i]))
			return tp_error_set(TP_EINVAL, "sparsify: the update has a value that is "
					    "not finite");
		nonzero += d[i] != 0;
	}
	unsigned char *keep = calloc(n ? n : 1, 1);
	float *score = NULL;
	if (!keep)
		return tp_error_set(TP_ENOMEM, "out of memory for %zu entries", n);
	float gain = 1; /* dare's rescaling of what it keeps */
	uint64_t want = (uint64_t)ceil(density * (double)n - 1e-9);
	if (select == TP_SPARSIFY_SELECT_DARE) {
		uint64_t st = seed;
		gain = (float)(1.0 / density);
		for (size_t i = 0; i < n; i++) {
			double u = (double)(splitmix64(&st) >> 11) * 0x1.0p-53;
			keep[i] = d[i] != 0 && u < density;
		}
	} else if (want >= nonzero) {
		for (size_t i = 0; i < n; i++)
			keep[i] = d[i] != 0;
	} else if (want > 0) {
		score = malloc(n * sizeof(*score));
		if (!score) {
			free(keep);
			return tp_error_set(TP_ENOMEM, "out of memory for %zu entries", n);
		}
		for (size_t i = 0; i < n; i++) {
			float w = select == TP_SPARSIFY_SELECT_ACTIVATION && col_norm
					  ? fabsf(col_norm[i % cols]) : 1.0f;
			/* 0 for a zero entry, so that it is never chosen over one
			 * that changed, and the product stays finite. */
			float s = d[i] == 0 ? 0 : fabsf(d[i]) * w;
			score[i] = isfinite(s) ? s : 3.0e38f;
		}
		uint32_t t = 0;
		int rc = kth_largest_bits(score, n, want, &t);
		if (rc < 0) {
			free(score);
			free(keep);
			return rc;
		}
		uint64_t taken = 0;
		for (size_t i = 0; i < n; i++)
			if (float_bits(score[i]) > t && d[i] != 0) {
				keep[i] = 1;
				taken++;
			}
		/* Ties at the threshold, in index order, up to the count. */
		for (size_t i = 0; i < n && taken < want; i++)
			if (float_bits(score[i]) == t && d[i] != 0) {
				keep[i] = 1;
				taken++;
			}
		free(score);
	}
	tp_sparsify_tensor_stats s = { .entries = n };
	float qmax = (float)((1u << (bits - 1)) - 1);
	for (size_t r = 0; r < rows; r++) {
		float *v = d + r * cols;
		const unsigned char *k = keep + r * cols;
		for (size_t j = 0; j < cols; j++)
			if (k[j])
				v[j] *= gain;
		float scale = row_scale(v, k, cols, bits, qmax);
		for (size_t j = 0; j < cols; j++) {
			float orig = k[j] ? v[j] / gain : v[j];
			float q = k[j] && scale > 0 ? quant_one(v[j], scale, qmax) : 0.0f;
			double e = (double)q - orig;
			s.sq_err += e * e;
			s.chosen += k[j];
			s.nonzero += q != 0;
			v[j] = q;
		}
	}
	free(keep);
	if (stats)
		*stats = s;
	return 0;
}

/* ---- weight files ------------------------------------------------------------- */

/* A directory's weights: model.safetensors, or the shards of its index. */
typedef struct weights {
	char *index; /* the index's path, NULL for one file */
	char **paths;
	size_t n;
	tp_safetensors **st;
} weights;

static void weights_clear(weights *w)
{
	for (size_t i = 0; w->st && i < w->n; i++)
		tp_safetensors_free(w->st[i]);
	free(w->st);
	if (w->index)
		tp_safetensors_shards_free(w->paths, w->n);
	else if (w->paths) {
		free(w->paths[0]);
		free(w->paths);
	}
	free(w->index);
	*w = (weights){ 0 };
}

static int weights_open(const char *dir, weights *w)
{
	char *path = NULL;
	int rc = tp_optimize_weights_path(dir, NULL, &path);
	*w = (weights){ 0 };
	if (rc < 0)
		return rc;
	if (tp_safetensors_is_index(path)) {
		w->index = path;
		if ((rc = tp_safetensors_index_shards(&w->paths, &w->n, path)) < 0) {
			w->paths = NULL;
			goto fail;
		}
	} else {
		w->paths = malloc(sizeof(*w->paths));
		if (!w->paths) {
			free(path);
			return tp_error_set(TP_ENOMEM, "out of memory");
		}
		w->paths[0] = path;
		w->n = 1;
	}
	w->st = calloc(w->n, sizeof(*w->st));
	if (!w->st) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < w->n; i++)
		if ((rc = tp_safetensors_open(&w->st[i], w->paths[i])) < 0)
			goto fail;
	return 0;
fail:
	weights_clear(w);
	return rc;
}

static const tp_st_tensor *weights_find(const weights *w, const char *name, size_t *shard)
{
	for (size_t i = 0; i < w->n; i++) {
		const tp_st_tensor *t = tp_safetensors_find(w->st[i], name);
		if (t) {
			*shard = i;
			return t;
		}
	}
	return NULL;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static int read_at(const char *path, uint64_t off, void *buf, size_t n)
{
	int fd, rc = tp_fs_open_regular(path, &fd);
	if (rc < 0)
		return rc;
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = r < 0 ? tp_error_set(TP_EIO, "%s: %s", path, strerror(errno))
				   : tp_error_set(TP_ECORRUPT, "%s: shorter than its header says",
						  path);
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	return rc;
}

static bool float_dtype(tp_dtype d)
{
	return d == TP_DTYPE_F32 || d == TP_DTYPE_F16 || d == TP_DTYPE_BF16;
}

static void widen(tp_dtype dt, const unsigned char *src, size_t n, float *dst)
{
	for (size_t i = 0; i < n; i++) {
		if (dt == TP_DTYPE_F32) {
			memcpy(&dst[i], src + 4 * i, 4);
			continue;
		}
		uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
		dst[i] = dt == TP_DTYPE_BF16 ? tp_bf16_to_f32(h) : tp_fp16_to_f32(h);
	}
}

static void narrow(tp_dtype dt, const float *src, size_t n, unsigned char *dst)
{
	for (size_t i = 0; i < n; i++) {
		if (dt == TP_DTYPE_F32) {
			memcpy(dst + 4 * i, &src[i], 4);
			continue;
		}
		uint16_t h = dt == TP_DTYPE_BF16 ? tp_bf16_from_f32(src[i]) : tp_fp16_from_f32(src[i]);
		dst[2 * i] = (unsigned char)h;
		dst[2 * i + 1] = (unsigned char)(h >> 8);
	}
}

/* What a run needs besides its options. */
typedef struct job {
	const tp_sparsify_opts *o;
	const char *out_dir;
	weights base, ft;
	tp_quant_calib_set calib; /* activation only */
	bool has_calib;
	uint64_t tensors_done, tensors_total;
} job;

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* ‖x_j‖ of the layer named by a tensor "<layer>.weight", or NULL. */
static float *col_norms(const job *j, const char *tensor, size_t cols)
{
	if (!j->has_calib)
		return NULL;
	size_t len = strlen(tensor);
	if (len < 8 || strcmp(tensor + len - 7, ".weight") != 0)
		return NULL;
	char *layer = strndup(tensor, len - 7);
	const tp_quant_calib *c = layer ? tp_quant_calib_find(&j->calib, layer) : NULL;
	free(layer);
	if (!c || c->cols != cols || !c->sq_sum || c->nsamples == 0)
		return NULL;
	float *n = malloc(cols * sizeof(*n));
	for (size_t k = 0; n && k < cols; k++)
		n[k] = (float)sqrt(c->sq_sum[k] / (double)c->nsamples);
	return n;
}

typedef enum kind { KIND_UNCHANGED, KIND_EXACT, KIND_SPARSE } kind;

/* FT's tensor t (bytes fb) into out: BASE + Q(Δ) when it qualifies. */
static int make_tensor(job *j, const tp_st_tensor *t, const unsigned char *fb,
		       unsigned char *out, double density, tp_sparsify_result *res)
{
	size_t shard, n = t->size / tp_dtype_size(t->dtype);
	const tp_st_tensor *b = weights_find(&j->base, t->name, &shard);
	bool same_shape = b && b->ndim == t->ndim &&
			  !memcmp(b->shape, t->shape, t->ndim * sizeof(t->shape[0]));
	unsigned char *bb = NULL;
	float *bf = NULL, *df = NULL, *norm = NULL;
	kind k = KIND_EXACT;
	int rc = 0;
	memcpy(out, fb, t->size);
	if (same_shape && b->dtype == t->dtype) {
		if (!(bb = malloc(t->size ? t->size : 1)))
			return tp_error_set(TP_ENOMEM, "out of memory for %s", t->name);
		if ((rc = read_at(j->base.paths[shard], b->offset, bb, t->size)) < 0)
			goto done;
		if (memcmp(bb, fb, t->size) == 0) {
			k = KIND_UNCHANGED;
			goto done;
		}
	}
	if (!same_shape || t->ndim < 2 || !float_dtype(t->dtype) || !float_dtype(b->dtype) ||
	    n == 0)
		goto done;
	size_t bsize = b->size;
	free(bb);
	bf = malloc(n * sizeof(*bf));
	df = malloc(n * sizeof(*df));
	if (!(bb = malloc(bsize)) || !bf || !df) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for %s", t->name);
		goto done;
	}
	if ((rc = read_at(j->base.paths[shard], b->offset, bb, bsize)) < 0)
		goto done;
	widen(b->dtype, bb, n, bf);
	widen(t->dtype, fb, n, df);
	for (size_t i = 0; i < n; i++)
		if (!isfinite(bf[i]) || !isfinite(df[i]))
			goto done; /* kept exactly: Δ would not be a number */
	for (size_t i = 0; i < n; i++)
		df[i] -= bf[i];
	size_t rows = (size_t)t->shape[0], cols = rows ? n / rows : 0;
	norm = j->o->select == TP_SPARSIFY_SELECT_ACTIVATION ? col_norms(j, t->name, cols) : NULL;
	tp_sparsify_tensor_stats st;
	if ((rc = tp_optimize_sparsify_delta(df, rows, cols, norm, j->o->select, density,
					     j->o->bits, j->o->seed ^ name_hash(t->name), &st)) < 0) {
		rc = tp_error_wrap(rc, "%s", t->name);
		goto done;
	}
	for (size_t i = 0; i < n; i++)
		bf[i] += df[i];
	narrow(t->dtype, bf, n, out);
	res->kept += st.nonzero;
	k = KIND_SPARSE;
done:
	if (rc == 0) {
		res->tensors++;
		if (k == KIND_UNCHANGED)
			res->unchanged++;
		else {
			res->changed_weights += n;
			if (k == KIND_SPARSE)
				res->sparsified++;
			else
				res->exact++;
		}
	}
	free(bb);
	free(bf);
	free(df);
	free(norm);
	return rc;
}

static int write_all_fd(int fd, const char *path, const void *p, size_t n)
{
	int rc = tp_fs_write_all(fd, p, n);
	return rc < 0 ? tp_error_wrap(rc, "writing %s", path) : 0;
}

/* Copy [from, to) of path into fd. */
static int copy_range(const char *path, uint64_t from, uint64_t to, int fd, const char *out)
{
	unsigned char *buf = malloc(COPY_BLOCK);
	int rc = buf ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	while (rc == 0 && from < to) {
		size_t n = to - from < COPY_BLOCK ? (size_t)(to - from) : COPY_BLOCK;
		if ((rc = read_at(path, from, buf, n)) == 0)
			rc = write_all_fd(fd, out, buf, n);
		from += n;
	}
	free(buf);
	return rc;
}

/* One FT weight file into out_dir under the same name, through a
 * temporary renamed at the end. */
static int write_shard(job *j, size_t i, double density, tp_sparsify_result *res)
{
	const tp_safetensors *st = j->ft.st[i];
	const char *src = j->ft.paths[i];
	char *dst = NULL, *tmp = NULL;
	unsigned char *fb = NULL, *ob = NULL;
	int fd = -1, rc;
	if ((rc = tp_path_join(&dst, j->out_dir, base_name(src))) < 0)
		return rc;
	if (!(tmp = malloc(strlen(dst) + 8))) {
		free(dst);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	sprintf(tmp, "%s.tmp~", dst);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		rc = tp_error_set(TP_EIO, "%s: %s", tmp, strerror(errno));
		goto done;
	}
	/* Same tensors, dtypes and shapes: FT's header is OUT's header. */
	uint64_t pos = st->data_start;
	if ((rc = copy_range(src, 0, pos, fd, tmp)) < 0)
		goto done;
	for (size_t k = 0; k < st->ntensors; k++) {
		const tp_st_tensor *t = &st->tensors[k];
		if ((rc = copy_range(src, pos, t->offset, fd, tmp)) < 0)
			goto done;
		free(fb);
		free(ob);
		fb = malloc(t->size ? t->size : 1);
		ob = malloc(t->size ? t->size : 1);
		if (!fb || !ob) {
			rc = tp_error_set(TP_ENOMEM, "out of memory for %s", t->name);
			goto done;
		}
		if ((rc = read_at(src, t->offset, fb, t->size)) < 0 ||
		    (rc = make_tensor(j, t, fb, ob, density, res)) < 0 ||
		    (rc = write_all_fd(fd, tmp, ob, t->size)) < 0)
			goto done;
		pos = t->offset + t->size;
		j->tensors_done++;
		if (j->o->progress && j->o->progress(j->o->progress_ctx, j->tensors_done,
						     j->tensors_total)) {
			rc = tp_error_set(TP_EINVAL, "sparsify: stopped by the caller");
			goto done;
		}
	}
	if ((rc = copy_range(src, pos, st->file_size, fd, tmp)) < 0)
		goto done;
	res->out_bytes += st->file_size;
	if (close(fd) < 0) {
		fd = -1;
		rc = tp_error_set(TP_EIO, "%s: %s", tmp, strerror(errno));
		goto done;
	}
	fd = -1;
	if (rename(tmp, dst) < 0)
		rc = tp_error_set(TP_EIO, "renaming %s: %s", tmp, strerror(errno));
done:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		unlink(tmp);
	free(fb);
	free(ob);
	free(tmp);
	free(dst);
	return rc;
}

/* Every FT weight file at density; the counts in res start afresh. */
static int write_weights(job *j, double density, tp_sparsify_result *res)
{
	res->tensors = res->sparsified = res->exact = res->unchanged = 0;
	res->changed_weights = res->kept = res->out_bytes = 0;
	j->tensors_done = 0;
	for (size_t i = 0; i < j->ft.n; i++) {
		int rc = write_shard(j, i, density, res);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- small files and the model card ----------------------------------------- */

static bool ends_with(const char *s, const char *e)
{
	size_t a = strlen(s), b = strlen(e);
	return a >= b && strcmp(s + a - b, e) == 0;
}

/* FT's regular files other than its .safetensors and README.md (config,
 * tokenizer, the shard index: OUT keeps FT's sharding) are copied. */
static bool sparsify_skips(const char *name)
{
	return ends_with(name, ".safetensors") || !strcmp(name, "README.md");
}

/* Whether a front-matter line continues the key above it (a list item or
 * an indented line). */
static bool yaml_continues(const char *line, size_t l)
{
	return l > 0 && (line[0] == ' ' || line[0] == '\t' || line[0] == '-');
}

/* FT's model card with base_model and the recipe in its front matter (a
 * front matter is made when it has none; FT's own base_model is kept). */
static int write_card(const char *base_dir, const char *ft_dir, const char *out_dir,
		      const tp_sparsify_result *r)
{
	char *src = NULL, *dst = NULL, base[512];
	tp_buf in = TP_BUF_INIT(CARD_MAX), out = TP_BUF_INIT(CARD_MAX + 4096);
	int rc;
	if ((rc = tp_path_join(&src, ft_dir, "README.md")) < 0 ||
	    (rc = tp_path_join(&dst, out_dir, "README.md")) < 0)
		goto done;
	if (tp_fs_is_regular(src) && (rc = tp_fs_read_regular(src, &in)) < 0)
		goto done;
	const char *text = in.ptr ? in.ptr : "";
	size_t len = in.len, fm_len = 0, body = 0;
	bool has_fm = len >= 4 && !strncmp(text, "---\n", 4);
	if (has_fm) {
		const char *end = NULL;
		for (size_t i = 4; i + 3 <= len; i++)
			if (text[i - 1] == '\n' && !strncmp(text + i, "---", 3) &&
			    (i + 3 == len || text[i + 3] == '\n')) {
				end = text + i;
				break;
			}
		if (!end)
			has_fm = false;
		else {
			fm_len = (size_t)(end - text) - 4;
			body = (size_t)(end - text) + 3 + ((size_t)(end - text) + 3 < len);
		}
	}
	rc = tp_buf_adds(&out, "---\n");
	/* FT's front matter, its base_model (any form) kept, without the
	 * recipe of an earlier run. */
	bool has_base = false, skipping = false;
	for (size_t i = 0; rc == 0 && i < fm_len;) {
		const char *line = text + 4 + i, *nl = memchr(line, '\n', fm_len - i);
		size_t l = nl ? (size_t)(nl - line) + 1 : fm_len - i;
		if (!(skipping && yaml_continues(line, l)))
			skipping = !strncmp(line, "tenpak_sparsify:", 16);
		has_base |= !strncmp(line, "base_model:", 11);
		if (!skipping)
			rc = tp_buf_add(&out, line, l);
		i += l;
	}
	if (!has_base) {
		const char *b = base_dir + strlen(base_dir);
		while (b > base_dir && b[-1] == '/')
			b--;
		const char *s = b;
		while (s > base_dir && s[-1] != '/')
			s--;
		snprintf(base, sizeof(base), "%.*s", (int)(b - s), s);
	}
	if (rc == 0 && out.len && out.ptr[out.len - 1] != '\n')
		rc = tp_buf_adds(&out, "\n");
	if (rc == 0 && !has_base) {
		/* A plain name as is; anything else as a quoted YAML string. */
		bool plain = base[0] != 0;
		for (const char *c = base; *c; c++)
			plain &= (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
				 (*c >= '0' && *c <= '9') || strchr("._/-", *c) != NULL;
		if (plain)
			rc = tp_buf_addf(&out, "base_model: %s\n", base);
		else {
			rc = tp_buf_adds(&out, "base_model: \"");
			for (const char *c = base; rc == 0 && *c; c++)
				rc = *c == '"' || *c == '\\' ? tp_buf_addf(&out, "\\%c", *c)
				     : (unsigned char)*c < 0x20 ? tp_buf_addf(&out, "\\x%02x", *c)
								 : tp_buf_add(&out, c, 1);
			if (rc == 0)
				rc = tp_buf_adds(&out, "\"\n");
		}
	}
	if (rc == 0)
		rc = tp_buf_addf(&out,
				 "tenpak_sparsify:\n"
				 "  note: lossy; this model differs from the fine-tune it was made from\n"
				 "  select: %s\n  density: %.6g\n  bits: %u\n",
				 tp_optimize_sparsify_select_name(r->select), r->density,
				 r->bits);
	if (rc == 0 && r->has_quality)
		rc = tp_buf_addf(&out,
				 "  eval_tokens: %zu\n  kl_vs_finetune: %.6g\n"
				 "  ppl_delta_vs_finetune_pct: %.4g\n",
				 r->eval_tokens, r->kl_out, r->ppl_delta_pct);
	if (rc == 0 && r->has_quality && r->has_base)
		rc = tp_buf_addf(&out, "  base_kl_vs_finetune: %.6g\n", r->kl_base);
	if (rc == 0 && r->has_estimate)
		rc = tp_buf_addf(&out, "  stored_fraction_vs_base: %.4g\n", r->stored_fraction);
	if (rc == 0)
		rc = tp_buf_adds(&out, "---\n");
	if (rc == 0 && has_fm)
		rc = tp_buf_add(&out, text + body, len - body);
	else if (rc == 0)
		rc = tp_buf_add(&out, text, len);
	if (rc == 0)
		rc = tp_fs_write_file(dst, out.ptr, out.len);
done:
	tp_buf_free(&in);
	tp_buf_free(&out);
	free(src);
	free(dst);
	return rc;
}

/* ---- measuring --------------------------------------------------------------- */

typedef struct meter {
	int32_t *ids, *calib_ids;
	size_t n, ncalib;
	tp_eval_opts eo;
	tp_eval_ref *ref;
	tp_eval_result ft;
	unsigned threads;
} meter;

static void meter_clear(meter *m)
{
	free(m->ids);
	free(m->calib_ids);
	tp_runtime_eval_ref_free(m->ref);
	*m = (meter){ 0 };
}

/* Tokenize the texts with FT's tokenizer and score FT once. */
static int meter_setup(const char *ft_dir, const tp_sparsify_opts *o, bool want_eval,
		       bool want_calib, meter *mt)
{
	tp_tokenizer *tok = NULL;
	tp_model *m = NULL;
	char *path = NULL;
	tp_model_opts mo = { .threads = o->threads };
	int rc;
	*mt = (meter){ .threads = o->threads };
	if ((rc = tp_path_join(&path, ft_dir, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(&tok, path)) < 0 || (rc = tp_model_load(&m, ft_dir, &mo)) < 0)
		goto done;
	mt->eo = (tp_eval_opts){ .mode = TP_PPL_MODE_LLAMACPP, .ctx = o->ctx ? o->ctx : CTX_DEFAULT,
				 .max_tokens = o->max_tokens,
				 .bos = tp_runtime_choose_bos(tp_model_get_config(m), tok) };
	if (want_eval && ((rc = tp_tokenizer_encode(tok, o->eval_text, o->eval_len, false,
						    &mt->ids, &mt->n)) < 0 ||
			  (rc = tp_runtime_eval_reference(&mt->ref, m, mt->ids, mt->n, &mt->eo,
							  &mt->ft)) < 0))
		goto done;
	if (want_calib) {
		const char *t = o->calib_text ? o->calib_text : o->eval_text;
		size_t len = o->calib_text ? o->calib_len : o->eval_len;
		rc = tp_tokenizer_encode(tok, t ? t : "", t ? len : 0, false, &mt->calib_ids,
					 &mt->ncalib);
	}
done:
	tp_tokenizer_free(tok);
	tp_model_free(m);
	free(path);
	if (rc < 0)
		meter_clear(mt);
	return rc;
}

/* Statistics of FT's layer inputs on the calibration text. */
static int calibrate(const char *ft_dir, const tp_sparsify_opts *o, const meter *mt,
		     tp_quant_calib_set *out)
{
	tp_model *m = NULL;
	tp_model_opts mo = { .threads = o->threads };
	if (mt->ncalib == 0)
		return tp_error_set(TP_EINVAL, "sparsify: activation selection needs a "
				    "calibration text");
	int rc = tp_model_load(&m, ft_dir, &mo);
	tp_calib_opts co = { .ctx = mt->eo.ctx, .bos = mt->eo.bos };
	if (rc == 0)
		rc = tp_optimize_calibrate(m, mt->calib_ids, mt->ncalib, &co, out);
	tp_model_free(m);
	return rc;
}

static int measure(const char *dir, const meter *mt, double *ppl, double *kl)
{
	tp_model *m = NULL;
	tp_model_opts mo = { .threads = mt->threads };
	tp_eval_result r;
	int rc = tp_model_load(&m, dir, &mo);
	if (rc == 0)
		rc = tp_runtime_eval_perplexity_ref(m, mt->ref, mt->ids, mt->n, &mt->eo, &r);
	tp_model_free(m);
	if (rc == 0) {
		*ppl = r.ppl;
		*kl = r.kl_mean;
	}
	return rc;
}

/* Write OUT at density and, with a meter, measure it as a step. */
static int try_density(job *j, const meter *mt, double density, tp_sparsify_result *res,
		       tp_sparsify_step *step)
{
	const tp_sparsify_opts *o = j->o;
	int rc = write_weights(j, density, res);
	*step = (tp_sparsify_step){ .density = density, .within = true };
	if (rc < 0 || !mt->ref)
		return rc;
	if ((rc = measure(j->out_dir, mt, &step->ppl, &step->kl)) < 0)
		return tp_error_wrap(rc, "measuring %s", j->out_dir);
	step->ppl_delta_pct = 100.0 * (step->ppl / mt->ft.ppl - 1.0);
	if (o->max_kl > 0 && step->kl > o->max_kl)
		step->within = false;
	if (o->max_ppl_delta_pct > 0 && fabs(step->ppl_delta_pct) > o->max_ppl_delta_pct)
		step->within = false;
	if (res->nsteps < TP_SPARSIFY_MAX_STEPS)
		res->steps[res->nsteps++] = *step;
	if (o->on_step && (rc = o->on_step(o->step_ctx, step)) != 0)
		return rc < 0 ? rc : tp_error_set(TP_EINVAL, "sparsify: stopped by the caller");
	return 0;
}

/* The smallest density within the budget, by bisection on log(density)
 * between SEARCH_LO and 1; OUT is left written at it. */
static int search(job *j, const meter *mt, tp_sparsify_result *res, tp_sparsify_step *best)
{
	tp_sparsify_step s;
	int rc = try_density(j, mt, 1.0, res, &s);
	*best = s;
	if (rc < 0 || !s.within)
		return rc;
	double lo = SEARCH_LO, hi = 1.0;
	if ((rc = try_density(j, mt, lo, res, &s)) < 0)
		return rc;
	if (s.within) {
		*best = s;
		return 0;
	}
	bool written_best = false;
	while (hi / lo > SEARCH_RATIO && res->nsteps < TP_SPARSIFY_MAX_STEPS) {
		double mid = sqrt(lo * hi);
		if ((rc = try_density(j, mt, mid, res, &s)) < 0)
			return rc;
		written_best = s.within;
		if (s.within) {
			hi = mid;
			*best = s;
		} else
			lo = mid;
	}
	if (!written_best)
		rc = write_weights(j, best->density, res); /* the same bytes as at its step */
	return rc;
}

static int estimate(const job *j, tp_sparsify_result *res)
{
	const char **bases = calloc(j->base.n, sizeof(*bases));
	if (!bases)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < j->base.n; i++)
		bases[i] = j->base.paths[i];
	tp_delta_opts dopts = { .threads = j->o->threads };
	uint64_t stored = 0;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < j->ft.n; i++) {
		char *p = NULL;
		tp_delta_layout *l = NULL;
		if ((rc = tp_path_join(&p, j->out_dir, base_name(j->ft.paths[i]))) == 0 &&
		    (rc = tp_delta_estimate(&l, p, bases, j->base.n, &dopts)) == 0)
			stored += l->delta_size;
		tp_delta_layout_free(l);
		free(p);
	}
	free(bases);
	if (rc < 0)
		return rc;
	res->has_estimate = true;
	res->stored_bytes = stored;
	res->stored_fraction = res->out_bytes ? (double)stored / (double)res->out_bytes : 0;
	res->bits_per_changed_weight =
		res->changed_weights ? 8.0 * (double)stored / (double)res->changed_weights : 0;
	return 0;
}

int tp_optimize_sparsify(const char *base_dir, const char *ft_dir, const char *out_dir,
			 const tp_sparsify_opts *opts, tp_sparsify_result *out)
{
	tp_sparsify_opts o = *opts;
	if (o.bits == 0)
		o.bits = 8;
	bool budget = o.max_kl > 0 || o.max_ppl_delta_pct > 0;
	if (o.bits < TP_SPARSIFY_BITS_MIN || o.bits > TP_SPARSIFY_BITS_MAX ||
	    (!budget && !(o.density > 0 && o.density <= 1)) ||
	    (unsigned)o.select > TP_SPARSIFY_SELECT_DARE)
		return tp_error_set(TP_EINVAL, "sparsify: density must be in (0, 1] and bits in "
				    "[%d, %d]", TP_SPARSIFY_BITS_MIN, TP_SPARSIFY_BITS_MAX);
	if (budget && !o.eval_text)
		return tp_error_set(TP_EINVAL, "sparsify: a quality budget needs an eval text");
	job j = { .o = &o, .out_dir = out_dir };
	meter mt = { 0 };
	tp_sparsify_result *res = calloc(1, sizeof(*res));
	struct stat sb;
	int rc;
	if (!res)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (stat(out_dir, &sb) == 0) {
		char *a = realpath(out_dir, NULL), *b = realpath(ft_dir, NULL),
		     *c = realpath(base_dir, NULL);
		bool same = a && ((b && !strcmp(a, b)) || (c && !strcmp(a, c)));
		free(a);
		free(b);
		free(c);
		if (same) {
			free(res);
			return tp_error_set(TP_EINVAL, "sparsify: OUT_DIR must differ from the "
					    "base and the fine-tune");
		}
	}
	if ((rc = weights_open(base_dir, &j.base)) < 0 || (rc = weights_open(ft_dir, &j.ft)) < 0)
		goto done;
	for (size_t i = 0; i < j.ft.n; i++)
		j.tensors_total += j.ft.st[i]->ntensors;
	bool want_calib = o.select == TP_SPARSIFY_SELECT_ACTIVATION;
	if ((o.eval_text || want_calib) &&
	    (rc = meter_setup(ft_dir, &o, o.eval_text != NULL, want_calib, &mt)) < 0)
		goto done;
	if (want_calib) {
		if ((rc = calibrate(ft_dir, &o, &mt, &j.calib)) < 0)
			goto done;
		j.has_calib = true;
	}
	if ((rc = tp_fs_mkdirs(out_dir)) < 0 ||
	    (rc = tp_optimize_copy_small_files(ft_dir, out_dir, sparsify_skips)) < 0)
		goto done;
	res->bits = o.bits;
	res->select = o.select;
	tp_sparsify_step best;
	rc = budget ? search(&j, &mt, res, &best) : try_density(&j, &mt, o.density, res, &best);
	if (rc < 0)
		goto done;
	res->density = best.density;
	res->within_budget = best.within;
	if (mt.ref) {
		res->has_quality = true;
		res->eval_tokens = mt.ft.tokens;
		res->ppl_ft = mt.ft.ppl;
		res->ppl_out = best.ppl;
		res->kl_out = best.kl;
		res->ppl_delta_pct = best.ppl_delta_pct;
		/* The base for reference; one that cannot be run against FT's
		 * tokens (another vocabulary) just has no figures. */
		if (measure(base_dir, &mt, &res->ppl_base, &res->kl_base) == 0) {
			res->has_base = true;
			res->ppl_delta_base_pct = 100.0 * (res->ppl_base / res->ppl_ft - 1.0);
		} else
			tp_error_clear();
	}
	if (!o.skip_estimate && (rc = estimate(&j, res)) < 0)
		goto done;
	rc = write_card(base_dir, ft_dir, out_dir, res);
done:
	if (rc == 0)
		*out = *res;
	free(res);
	meter_clear(&mt);
	if (j.has_calib)
		tp_quant_calib_set_free(&j.calib);
	weights_clear(&j.base);
	weights_clear(&j.ft);
	return rc;
}
