/* Method candidates (GPTQ, AWQ): the model is loaded unquantized, its
 * layers packed in the stored dtype, and its decoder blocks are quantized in
 * order, each from inputs captured through the blocks already quantized
 * (optimize/README.md, "Pipeline"). Only the current block's 7 layers are
 * widened to fp32; each is replaced by a packed group layer of the method's
 * codes. */
#include "quant_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Input rows AWQ's scale and clipping searches see per layer. */
#define AWQ_SAMPLE_ROWS 512u
#define PER_BLOCK 7
enum { Q, K, V, O, GATE, UP, DOWN };

static const char *const method_candidates[] = {
	"gptq4_g128", "gptq3_g128", "awq4_g128", "awq4_g256", "awq3_g128", NULL,
};

const char *const *tp_optimize_method_candidates(void)
{
	return method_candidates;
}

/* "gptq4_g128" -> gptq, 4, 128. */
static bool parse_method(const char *name, bool *gptq, int *bits, size_t *group)
{
	const char *rest;
	if (strncmp(name, "gptq", 4) == 0)
		rest = name + 4, *gptq = true;
	else if (strncmp(name, "awq", 3) == 0)
		rest = name + 3, *gptq = false;
	else
		return false;
	int b = 0, used = 0;
	unsigned long g = 0;
	if (sscanf(rest, "%d_g%lu%n", &b, &g, &used) != 2 || rest[used] || b < 2 || b > 8 ||
	    rest[0] < '0' || rest[0] > '9')
		return false;
	*bits = b;
	*group = g;
	return true;
}

bool tp_optimize_is_method(const char *name)
{
	bool gptq;
	int bits;
	size_t group;
	return parse_method(name, &gptq, &bits, &group);
}

/* An fp32 source is held in this exact format (4 bytes per weight, as a
 * dense layer) so that every source layer can be widened the same way. */
static size_t f32_size(size_t rows, size_t cols)
{
	return 4 * rows * cols;
}

static int f32_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			void *packed)
{
	(void)calib;
	memcpy(packed, w, rows * cols * sizeof(float));
	return 0;
}

static void f32_rows(const void *packed, size_t rows, size_t cols, size_t r0, size_t r1,
		     float *w)
{
	(void)rows;
	memcpy(w, (const float *)packed + r0 * cols, (r1 - r0) * cols * sizeof(float));
}

static void f32_all(const void *packed, size_t rows, size_t cols, float *w)
{
	f32_rows(packed, rows, cols, 0, rows, w);
}

static const tp_quant_format fmt_f32 = { "fp32", f32_size, f32_quantize, f32_all, f32_rows };

const tp_quant_format *tp_quant_format_fp32(void)
{
	return &fmt_f32;
}

/* fp32 copies of the current block's layers, by tp_model_linear index (NULL
 * outside it), and every layer's shape. */
typedef struct kept {
	size_t count;
	float **w, **bias;
	size_t *rows, *cols;
} kept;

static int kept_alloc(kept *k, size_t count)
{
	k->w = calloc(count, sizeof(*k->w));
	k->bias = calloc(count, sizeof(*k->bias));
	k->rows = calloc(count, sizeof(*k->rows));
	k->cols = calloc(count, sizeof(*k->cols));
	if (!k->w || !k->bias || !k->rows || !k->cols)
		return tp_error_set(TP_ENOMEM, "out of memory");
	k->count = count;
	return 0;
}

/* The loader's factory: decoder layers packed in the source dtype (src),
 * lm_head too when it is a half type (head). */
typedef struct source {
	const tp_quant_format *src, *head;
} source;

static int pack_source(void *ctx, const char *name, const float *w, const float *bias,
		       size_t out_dim, size_t in_dim, tp_linear **made)
{
	const source *so = ctx;
	const tp_quant_format *f = tp_optimize_is_quantized(name) ? so->src
				   : strcmp(name, "lm_head") == 0 ? so->head
								  : NULL;
	if (!f)
		return TP_ENOTFOUND;
	size_t bytes = f->packed_size(out_dim, in_dim);
	void *packed = malloc(bytes ? bytes : 1);
	if (!packed)
		return tp_error_set(TP_ENOMEM, "%s: out of memory", name);
	int rc = f->quantize(w, out_dim, in_dim, NULL, packed);
	if (rc == 0)
		rc = tp_quant_linear_new(made, f, packed, out_dim, in_dim, bias);
	if (rc < 0)
		free(packed);
	return rc;
}

static void kept_free(kept *k)
{
	for (size_t i = 0; i < k->count; i++) {
		if (k->w)
			free(k->w[i]);
		if (k->bias)
			free(k->bias[i]);
	}
	free(k->w);
	free(k->bias);
	free(k->rows);
	free(k->cols);
}

/* The hidden states entering the current block for every calibration
 * window (the windows of tp_optimize_calibrate: ctx tokens, BOS first), so
 * a capture runs that block only: one pass through the model in all. */
typedef struct states {
	size_t nwin, hidden, block, pre, ctx;
	size_t limit; /* feed_block: text tokens fed (the first ones); 0: all */
	size_t *len, *off; /* window w: len tokens at x + off * hidden */
	float *x, *work;
	tp_kv *kv;
	const tp_calib_device *dev; /* runs the block when it can (dev_block) */
} states;

static void states_free(states *st)
{
	free(st->len);
	free(st->off);
	free(st->x);
	free(st->work);
	tp_kv_free(st->kv);
}

static int states_init(states *st, const tp_model *m, const tp_candidate_calib *calib)
{
	const tp_calib_opts *o = &calib->opts;
	size_t n = calib->n, ctx = o->ctx ? o->ctx : 512, pre = o->bos >= 0, total, cells;
	if (o->max_tokens && n > o->max_tokens)
		n = o->max_tokens;
	if (ctx < 2 || n == 0)
		return tp_error_set(TP_EINVAL, "calibration needs tokens and a context of 2 or more");
	size_t step = ctx - pre;
	st->pre = pre;
	st->ctx = ctx;
	st->hidden = tp_model_get_config(m)->hidden;
	st->nwin = (n + step - 1) / step;
	total = n + pre * st->nwin;
	if (!tp_mul_ok(total, st->hidden, &cells) || cells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "calibration states too large");
	st->len = calloc(st->nwin, sizeof(*st->len));
	st->off = calloc(st->nwin, sizeof(*st->off));
	st->x = malloc(cells * sizeof(float));
	st->work = malloc(ctx * st->hidden * sizeof(float));
	int32_t *win = malloc(ctx * sizeof(*win));
	int rc = 0;
	if (!st->len || !st->off || !st->x || !st->work || !win) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for the calibration states");
		goto done;
	}
	if ((rc = tp_kv_new(&st->kv, m, ctx, ctx)) < 0)
		goto done;
	size_t at = 0;
	for (size_t w = 0, b = 0; w < st->nwin && rc == 0; w++, b += step) {
		size_t len = n - b < step ? n - b : step;
		if (pre)
			win[0] = o->bos;
		memcpy(win + pre, calib->ids + b, len * sizeof(*win));
		st->len[w] = len + pre;
		st->off[w] = at;
		rc = tp_model_embed(m, win, len + pre, st->x + at * st->hidden);
		at += len + pre;
	}
done:
	free(win);
	return rc;
}

/* The device runs whole blocks itself (else at most their products). */
static bool dev_block(const tp_calib_device *dev)
{
	return dev && dev->block_new && dev->block_run && dev->block_free;
}

/* The current block over the windows' states: in place (advance: they
 * become the next block's inputs), or over a copy of the first limit
 * tokens' windows (a capture). On the device when it runs blocks and
 * takes this one, else through tp_model_forward_layers. */
static int run_block(states *st, tp_model *m, bool advance, size_t *fed)
{
	const tp_calib_device *dev = st->dev;
	void *blk = NULL;
	int rc = 0;
	if (dev_block(dev) && (rc = dev->block_new(dev->ctx, m, st->block, st->ctx, &blk)) < 0) {
		if (rc != TP_EUNSUPPORTED)
			return rc;
		blk = NULL;
		rc = 0;
	}
	size_t left = !advance && st->limit ? st->limit : SIZE_MAX;
	*fed = 0;
	for (size_t w = 0; w < st->nwin && left && rc == 0; w++) {
		/* a window cut short is its first rows: attention is causal */
		size_t text = st->len[w] - st->pre, take = text < left ? text : left;
		size_t len = take + st->pre;
		float *x = st->x + st->off[w] * st->hidden;
		left -= take;
		if (!advance) {
			memcpy(st->work, x, len * st->hidden * sizeof(float));
			x = st->work;
		}
		if (blk) {
			rc = dev->block_run(blk, x, len);
		} else {
			tp_kv_reset(st->kv);
			rc = tp_model_forward_layers(m, st->kv, st->block, st->block + 1, x, len);
		}
		*fed += len;
	}
	if (blk)
		dev->block_free(blk);
	return rc;
}

/* tp_calib_opts.feed: the current block over a copy of every window's states. */
static int feed_block(void *ctx, tp_model *m, size_t *fed)
{
	return run_block(ctx, m, false, fed);
}

/* Block b's layers replaced by copies on the calibration device while it
 * runs (so its products run there; norms, RoPE and attention stay in
 * tp_model_forward_layers), the model's own kept in old to be put back. */
typedef struct on_device {
	size_t base, n;
	tp_linear *old[PER_BLOCK];
} on_device;

static void block_back(tp_model *m, on_device *d)
{
	for (; d->n; d->n--) {
		size_t i = d->base + d->n - 1;
		tp_linear *copy = NULL;
		if (tp_model_swap_linear(m, i, d->old[d->n - 1], &copy) == 0)
			tp_linear_free(copy);
	}
}

static int block_to_device(tp_model *m, const tp_calib_device *dev, size_t b, on_device *d)
{
	*d = (on_device){ .base = b * PER_BLOCK };
	if (!dev || !dev->linear_copy || dev_block(dev))
		return 0;
	int rc = 0;
	for (size_t k = 0; k < PER_BLOCK && rc == 0; k++) {
		tp_linear *copy = NULL;
		if ((rc = dev->linear_copy(dev->ctx, tp_model_linear(m, d->base + k), &copy)) < 0)
			tp_error_wrap(rc, "%s on the device", tp_model_linear_name(m, d->base + k));
		else if ((rc = tp_model_swap_linear(m, d->base + k, copy, &d->old[k])) < 0)
			tp_linear_free(copy);
		else
			d->n++;
	}
	if (rc < 0)
		block_back(m, d);
	return rc;
}

/* The states through the (now quantized) current block: the next one's inputs. */
static int states_advance(states *st, tp_model *m, const tp_calib_device *dev)
{
	on_device d;
	size_t fed;
	int rc = block_to_device(m, dev, st->block, &d);
	if (rc == 0)
		rc = run_block(st, m, true, &fed);
	block_back(m, &d);
	st->block++;
	return rc;
}

typedef struct job {
	tp_model *m;
	states states;
	kept k;
	const tp_quant_format *f;
	const tp_candidate_calib *calib;
	int bits;
	size_t group;
	unsigned source_bits;
	tp_candidate_stats st;
} job;

/* Widen block b's layers (and biases) from their packed source. */
static int widen_block(job *j, size_t b)
{
	for (size_t i = b * PER_BLOCK; i < (b + 1) * PER_BLOCK; i++) {
		const tp_quant_format *f;
		const void *packed;
		const float *bias;
		size_t rows = j->k.rows[i], cols = j->k.cols[i];
		if (!tp_quant_linear_parts(tp_model_linear(j->m, i), &f, &packed, &bias))
			return tp_error_set(TP_EINVAL, "%s is not a packed source layer",
					    tp_model_linear_name(j->m, i));
		j->k.w[i] = malloc(rows * cols * sizeof(float));
		j->k.bias[i] = bias ? malloc(rows * sizeof(float)) : NULL;
		if (!j->k.w[i] || (bias && !j->k.bias[i]))
			return tp_error_set(TP_ENOMEM, "%s: out of memory",
					    tp_model_linear_name(j->m, i));
		f->dequantize(packed, rows, cols, j->k.w[i]);
		if (bias)
			memcpy(j->k.bias[i], bias, rows * sizeof(float));
	}
	return 0;
}

/* Put the method's codes res, packed in the group format, in place of
 * layer i, count it, and drop its widened copy. */
static int replace(job *j, size_t i, tp_quant_result *res)
{
	size_t rows = j->k.rows[i], cols = j->k.cols[i];
	size_t ng = rows * res->ngroups, bytes = j->f->packed_size(rows, cols);
	size_t fgroups = j->group && j->group < cols ? (cols + j->group - 1) / j->group : 1;
	tp_linear *l = NULL;
	void *packed = NULL;
	int *zero = NULL, rc = 0;
	if (res->rows != rows || res->cols != cols || res->ngroups != fgroups) {
		rc = tp_error_set(TP_EINVAL, "%s: codes do not fit %s",
				  tp_model_linear_name(j->m, i), j->f->name);
		goto done;
	}
	packed = malloc(bytes ? bytes : 1);
	zero = malloc((ng ? ng : 1) * sizeof(*zero));
	if (!packed || !zero) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t g = 0; g < ng; g++)
		zero[g] = res->zeros[g];
	tp_quant_group_pack(j->bits, j->group, rows, cols, res->q, res->scales, zero, packed);
	if ((rc = tp_quant_linear_new(&l, j->f, packed, rows, cols, j->k.bias[i])) < 0)
		goto done;
	packed = NULL;
	if ((rc = tp_model_set_linear(j->m, i, l)) < 0) {
		tp_linear_free(l);
		goto done;
	}
	tp_candidate_stats_count(&j->st, rows, cols, bytes, j->source_bits);
	free(j->k.w[i]);
	free(j->k.bias[i]);
	j->k.w[i] = j->k.bias[i] = NULL;
done:
	free(packed);
	free(zero);
	tp_quant_result_free(res);
	return rc;
}

/* Capture the inputs of linear layers first..last-1 as the model is now. */
static int capture(job *j, size_t first, size_t last, bool hessian, size_t rows,
		   tp_quant_calib_set *set)
{
	tp_calib_opts o = j->calib->opts;
	o.hessian = hessian;
	o.sample_rows = rows;
	o.first = first;
	o.last = last;
	o.feed = feed_block;
	o.feed_ctx = &j->states;
	on_device d;
	int rc = block_to_device(j->m, o.device, j->states.block, &d);
	if (rc == 0)
		rc = tp_optimize_calibrate(j->m, j->calib->ids, j->calib->n, &o, set);
	block_back(j->m, &d);
	return rc;
}

/* AutoGPTQ's true-sequential groups within a block: each group's inputs are
 * captured after the groups before it are quantized. */
static int gptq_block(job *j, size_t b, float *w_out)
{
	static const size_t groups[][2] = { { Q, V + 1 }, { O, O + 1 }, { GATE, UP + 1 },
					    { DOWN, DOWN + 1 } };
	int rc = 0;
	for (size_t g = 0; g < 4 && rc == 0; g++) {
		size_t first = b * PER_BLOCK + groups[g][0], last = b * PER_BLOCK + groups[g][1];
		tp_quant_calib_set set = { 0 };
		if ((rc = capture(j, first, last, true, 0, &set)) < 0)
			break;
		for (size_t i = first; i < last && rc == 0; i++) {
			tp_quant_result res = { 0 };
			rc = tp_quant_gptq(j->k.w[i], j->k.rows[i], j->k.cols[i], &set.layers[i],
					   j->bits, j->group, true, w_out, &res);
			if (rc < 0)
				tp_error_wrap(rc, "%s", tp_model_linear_name(j->m, i));
			else
				rc = replace(j, i, &res);
		}
		tp_quant_calib_set_free(&set);
	}
	return rc;
}

/* Calibration tokens over which AutoAWQ's module loss is measured. */
#define AWQ_LOSS_TOKENS 1024u

/* AutoAWQ's loss for the scales of q/k/v: the error of the attention
 * output with those matrices fake-quantized and the rest of the model as it
 * is, taken as the output of o, the layer that ends the module, over the
 * first AWQ_LOSS_TOKENS calibration tokens. It needs whole windows, so the
 * model computes it: RoPE, softmax, GQA and biases are its own. The
 * matrices' own output error picks scales that make KL worse than RTN on
 * the fixture (optimize/README.md, Pipeline). */
typedef struct awq_loss {
	job *j;
	const size_t *idx;
	size_t nw, next, nx;
	float *ref, *y; /* next's outputs [nx][out]: unquantized group, candidate */
} awq_loss;

/* Layer next's outputs *y over the loss tokens as the model is now. On a
 * calibration device, the block alone runs there over its kept input states
 * (the same rows: the first loss tokens' windows), not the whole model. */
static int awq_next_out(awq_loss *a, float **y)
{
	tp_calib_opts o = a->j->calib->opts;
	size_t n = AWQ_LOSS_TOKENS;
	tp_quant_calib_set set = { 0 };
	tp_linear *l = tp_model_linear(a->j->m, a->next);
	const tp_calib_device *dev =
		o.device && (o.device->linear_copy || dev_block(o.device)) ? o.device : NULL;
	on_device d = { 0 };
	o.max_tokens = o.max_tokens && o.max_tokens < n ? o.max_tokens : n;
	o.hessian = false;
	/* every row: tokens plus at most one BOS per window (ctx >= 2) */
	o.sample_rows = 2 * o.max_tokens + 1;
	o.first = a->next;
	o.last = a->next + 1;
	int rc = 0;
	if (dev) {
		o.feed = feed_block;
		o.feed_ctx = &a->j->states;
		a->j->states.limit = o.max_tokens;
		rc = block_to_device(a->j->m, dev, a->j->states.block, &d);
	}
	if (rc == 0)
		rc = tp_optimize_calibrate(a->j->m, a->j->calib->ids, a->j->calib->n, &o, &set);
	block_back(a->j->m, &d);
	a->j->states.limit = 0;
	if (rc < 0) {
		tp_quant_calib_set_free(&set);
		return rc;
	}
	const tp_quant_calib *c = &set.layers[a->next];
	if (a->nx && c->nx != a->nx)
		rc = tp_error_set(TP_EINVAL, "awq: %zu loss rows, then %zu", a->nx, c->nx);
	else if (!*y && !(*y = malloc(c->nx * l->out * sizeof(float))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	if (rc == 0) {
		a->nx = c->nx;
		tp_linear_forward(l, c->x, c->nx, *y, tp_model_pool(a->j->m));
	}
	tp_quant_calib_set_free(&set);
	return rc;
}

/* w as layer i in the fp32 pass-through format: a device uploads its
 * bytes as they are (a dense layer would be read back through its forward). */
static int fp32_layer(job *j, size_t i, const float *w, tp_linear **l)
{
	size_t bytes = fmt_f32.packed_size(j->k.rows[i], j->k.cols[i]);
	void *packed = malloc(bytes ? bytes : 1);
	if (!packed)
		return tp_error_set(TP_ENOMEM, "out of memory");
	memcpy(packed, w, bytes);
	int rc = tp_quant_linear_new(l, &fmt_f32, packed, j->k.rows[i], j->k.cols[i],
				     j->k.bias[i]);
	if (rc < 0)
		free(packed);
	return rc;
}

static int awq_loss_eval(void *ctx, const float *const *wq, double *loss)
{
	awq_loss *a = ctx;
	job *j = a->j;
	tp_linear *old[3] = { 0 };
	size_t swapped = 0;
	int rc = 0;
	const tp_calib_device *dev = j->calib->opts.device;
	bool packed = dev && (dev->linear_copy || dev_block(dev)); /* for the device */
	for (; swapped < a->nw; swapped++) {
		size_t i = a->idx[swapped];
		tp_linear *l = NULL;
		rc = packed ? fp32_layer(j, i, wq[swapped], &l)
			    : tp_linear_dense_new(&l, wq[swapped], j->k.bias[i], j->k.rows[i],
						  j->k.cols[i]);
		if (rc < 0)
			break;
		if ((rc = tp_model_swap_linear(j->m, i, l, &old[swapped])) < 0) {
			tp_linear_free(l);
			break;
		}
	}
	if (rc == 0)
		rc = awq_next_out(a, &a->y);
	while (swapped--) { /* the unquantized layers back, whatever happened */
		tp_linear *l = NULL;
		if (tp_model_swap_linear(j->m, a->idx[swapped], old[swapped], &l) == 0)
			tp_linear_free(l);
	}
	if (rc < 0)
		return rc;
	double e = 0.0;
	for (size_t i = 0; i < a->nx * tp_model_linear(j->m, a->next)->out; i++) {
		double d = (double)a->y[i] - a->ref[i];
		e += d * d;
	}
	*loss = e;
	return 0;
}

/* The same loss for gate/up, the MLP output, computed here from their
 * sample inputs x (no model pass): down(silu(gate x) * up x), as the
 * runtime's MLP computes it, with down unquantized. */
typedef struct awq_mlp {
	job *j;
	const size_t *idx; /* gate, up */
	tp_linear *down;
	const float *x;
	size_t nx, inter;
	float *g, *u, *ref, *y; /* [nx][inter] x2, [nx][out of down] x2 */
} awq_mlp;

/* y = down(silu(gate x) * up x) with gate and up weights wq[0], wq[1]. */
static int awq_mlp_out(awq_mlp *a, const float *const *wq, float *y)
{
	job *j = a->j;
	tp_pool *pool = tp_model_pool(j->m);
	float *out[2] = { a->g, a->u };
	for (size_t m = 0; m < 2; m++) {
		size_t i = a->idx[m];
		tp_linear *l = NULL;
		int rc = tp_linear_dense_new(&l, wq[m], j->k.bias[i], j->k.rows[i], j->k.cols[i]);
		if (rc < 0)
			return rc;
		tp_linear_forward(l, a->x, a->nx, out[m], pool);
		tp_linear_free(l);
	}
	for (size_t i = 0; i < a->nx * a->inter; i++)
		a->g[i] = a->g[i] / (1.0f + expf(-a->g[i])) * a->u[i];
	tp_linear_forward(a->down, a->g, a->nx, y, pool);
	return 0;
}

static int awq_mlp_eval(void *ctx, const float *const *wq, double *loss)
{
	awq_mlp *a = ctx;
	int rc = awq_mlp_out(a, wq, a->y);
	if (rc < 0)
		return rc;
	double e = 0.0;
	for (size_t i = 0; i < a->nx * a->down->out; i++) {
		double d = (double)a->y[i] - a->ref[i];
		e += d * d;
	}
	*loss = e;
	return 0;
}

/* Scales for the matrices idx[0..nw) that read layer idx[0]'s input, with
 * the error of the module output at layer next: q/k/v (next o) and gate/up
 * (next down) through the loss callbacks above; o and down (next ==
 * idx[0]) end their module themselves, so their own output error. */
static int awq_scales(job *j, const tp_quant_calib_set *set, const size_t *idx, size_t nw,
		      size_t next, float *s)
{
	const float *w[3];
	size_t rows[3];
	const tp_quant_calib *c = &set->layers[idx[0]];
	for (size_t i = 0; i < nw; i++) {
		w[i] = j->k.w[idx[i]];
		rows[i] = j->k.rows[idx[i]];
	}
	double alpha;
	int rc;
	if (next == idx[0]) {
		rc = tp_quant_awq_search(w, rows, nw, c->cols, c->x, c->nx, c->abs_mean, j->bits,
					 j->group, s, &alpha);
	} else if (nw == 2) { /* gate, up -> down */
		size_t inter = j->k.rows[idx[0]], out = j->k.rows[next];
		awq_mlp a = { .j = j, .idx = idx, .down = tp_model_linear(j->m, next), .x = c->x,
			      .nx = c->nx, .inter = inter };
		a.g = malloc(c->nx * inter * sizeof(float));
		a.u = malloc(c->nx * inter * sizeof(float));
		a.ref = malloc(c->nx * out * sizeof(float));
		a.y = malloc(c->nx * out * sizeof(float));
		if (!a.g || !a.u || !a.ref || !a.y)
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		else if ((rc = awq_mlp_out(&a, w, a.ref)) == 0)
			rc = tp_quant_awq_search_loss(w, rows, nw, c->cols, c->abs_mean, j->bits,
						      j->group, awq_mlp_eval, &a, s, &alpha);
		free(a.g);
		free(a.u);
		free(a.ref);
		free(a.y);
	} else {
		awq_loss a = { .j = j, .idx = idx, .nw = nw, .next = next };
		rc = awq_next_out(&a, &a.ref);
		if (rc == 0)
			rc = tp_quant_awq_search_loss(w, rows, nw, c->cols, c->abs_mean, j->bits,
						      j->group, awq_loss_eval, &a, s, &alpha);
		free(a.ref);
		free(a.y);
	}
	if (rc < 0)
		tp_error_wrap(rc, "%s", tp_model_linear_name(j->m, idx[0]));
	return rc;
}

/* Divide row r (and its bias) of layer i by s[r]. */
static void scale_rows(job *j, size_t i, const float *s)
{
	for (size_t r = 0; r < j->k.rows[i]; r++) {
		float *row = j->k.w[i] + r * j->k.cols[i];
		for (size_t c = 0; c < j->k.cols[i]; c++)
			row[c] /= s[r];
		if (j->k.bias[i])
			j->k.bias[i][r] /= s[r];
	}
}

/* One block: scales searched on inputs of the unscaled block, 1/s folded
 * into the norms and v/up rows (optimize/README.md, AWQ), then clipping and
 * RTN of W diag(s). */
static int awq_block(job *j, size_t b, float *w_out)
{
	const tp_model_config *cfg = tp_model_get_config(j->m);
	size_t base = b * PER_BLOCK, hidden = cfg->hidden;
	size_t ocols = j->k.cols[base + O], dcols = j->k.cols[base + DOWN];
	tp_quant_calib_set set = { 0 };
	/* The four scale vectors in one block: qkv, gate/up, o, down. */
	float *s_qkv = malloc((2 * hidden + ocols + dcols) * sizeof(float));
	float *s_gu, *s_o, *s_d;
	float *g_in = tp_model_norm_weights(j->m, b, 0), *g_post = tp_model_norm_weights(j->m, b, 1);
	int rc = 0;
	if (!s_qkv) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	s_gu = s_qkv + hidden;
	s_o = s_gu + hidden;
	s_d = s_o + ocols;
	if (!g_in || !g_post || j->k.cols[base + Q] != hidden || j->k.cols[base + GATE] != hidden ||
	    j->k.rows[base + UP] != dcols) {
		rc = tp_error_set(TP_EINVAL, "layer %zu: shapes do not fit AWQ's folding", b);
		goto done;
	}
	if ((rc = capture(j, base, base + PER_BLOCK, false, AWQ_SAMPLE_ROWS, &set)) < 0)
		goto done;
	static const size_t qkv[] = { Q, K, V }, gu[] = { GATE, UP };
	size_t idx[3];
	for (size_t i = 0; i < 3; i++)
		idx[i] = base + qkv[i];
	if ((rc = awq_scales(j, &set, idx, 3, base + O, s_qkv)) < 0)
		goto done;
	for (size_t i = 0; i < 2; i++)
		idx[i] = base + gu[i];
	if ((rc = awq_scales(j, &set, idx, 2, base + DOWN, s_gu)) < 0)
		goto done;
	/* v -> o needs o's input channels to be v's rows one to one: not under
	 * grouped-query attention (AutoAWQ skips it when the shapes differ). */
	idx[0] = base + O;
	if (cfg->kv_heads == cfg->heads && j->k.rows[base + V] == ocols) {
		if ((rc = awq_scales(j, &set, idx, 1, base + O, s_o)) < 0)
			goto done;
	} else {
		for (size_t c = 0; c < ocols; c++)
			s_o[c] = 1;
	}
	idx[0] = base + DOWN;
	if ((rc = awq_scales(j, &set, idx, 1, base + DOWN, s_d)) < 0)
		goto done;
	for (size_t c = 0; c < hidden; c++) {
		g_in[c] /= s_qkv[c];
		g_post[c] /= s_gu[c];
	}
	scale_rows(j, base + V, s_o);
	scale_rows(j, base + UP, s_d);
	/* Which scales each layer's columns take and which inputs it sees. */
	const float *col_s[PER_BLOCK] = { s_qkv, s_qkv, s_qkv, s_o, s_gu, s_gu, s_d };
	const size_t xsrc[PER_BLOCK] = { Q, Q, Q, O, GATE, GATE, DOWN };
	for (size_t l = 0; l < PER_BLOCK && rc == 0; l++) {
		size_t i = base + l;
		const tp_quant_calib *c = &set.layers[base + xsrc[l]];
		/* AutoAWQ does not clip q and k: the q.k product magnifies it. */
		bool clip = l != Q && l != K;
		tp_quant_result res = { 0 };
		rc = tp_quant_awq(j->k.w[i], j->k.rows[i], j->k.cols[i], col_s[l], c->x, c->nx,
				  j->bits, j->group, clip, w_out, &res);
		if (rc < 0)
			tp_error_wrap(rc, "%s", tp_model_linear_name(j->m, i));
		else
			rc = replace(j, i, &res);
	}
done:
	tp_quant_calib_set_free(&set);
	free(s_qkv);
	return rc;
}

int tp_optimize_method_load(tp_model **out, const char *dir, const tp_model_opts *opts,
			    const char *name, const tp_candidate_calib *calib,
			    unsigned source_bits, tp_candidate_stats *stats)
{
	job j = { .calib = calib, .source_bits = source_bits };
	bool gptq;
	float *w_out = NULL;
	int rc = 0;
	if (!parse_method(name, &gptq, &j.bits, &j.group) ||
	    !(j.f = tp_quant_group_format(j.bits, j.group)))
		return tp_error_set(TP_ENOTFOUND, "unknown candidate '%s'", name);
	if (!calib || !calib->ids || !calib->n)
		return tp_error_set(TP_EINVAL, "%s needs calibration tokens", name);
	source so = { tp_optimize_head_format(dir, opts->weights), NULL };
	so.head = so.src;
	if (!so.src)
		so.src = &fmt_f32;
	tp_model_opts o = *opts;
	o.make_linear = pack_source;
	o.make_linear_ctx = &so;
	if ((rc = tp_model_load(&j.m, dir, &o)) < 0)
		goto done;
	double t0 = tp_quant_now_s();
	size_t layers = tp_model_get_config(j.m)->layers, most = 0;
	if ((rc = kept_alloc(&j.k, layers * PER_BLOCK)) < 0)
		goto done;
	for (size_t i = 0; i < layers * PER_BLOCK; i++) {
		const tp_linear *l = tp_model_linear(j.m, i);
		j.k.rows[i] = l->out;
		j.k.cols[i] = l->in;
		size_t n = j.k.rows[i] * j.k.cols[i];
		most = n > most ? n : most;
	}
	if (!(w_out = malloc(most * sizeof(float)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = states_init(&j.states, j.m, calib)) < 0)
		goto done;
	j.states.dev = calib->opts.device;
	for (size_t b = 0; b < layers && rc == 0; b++) {
		if ((rc = widen_block(&j, b)) < 0)
			break;
		rc = gptq ? gptq_block(&j, b, w_out) : awq_block(&j, b, w_out);
		if (rc == 0 && b + 1 < layers)
			rc = states_advance(&j.states, j.m, calib->opts.device);
	}
	if (rc < 0)
		goto done;
	j.st.quant_seconds = tp_quant_now_s() - t0;
	if ((rc = tp_candidate_stats_finish(&j.st, dir)) < 0)
		goto done;
	*stats = j.st;
	*out = j.m;
	j.m = NULL;
done:
	if (rc < 0)
		tp_error_wrap(rc, "%s", name);
	free(w_out);
	states_free(&j.states);
	kept_free(&j.k);
	tp_model_free(j.m);
	return rc;
}
