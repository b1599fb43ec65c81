/* Calibration: the statistics of every quantized layer's inputs, captured
 * by running the unquantized model over a text. */
#include "tp_optimize.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTX_DEFAULT 512
/* cols^2 doubles per layer: 16384 columns is already 2 GiB. */
#define HESSIAN_COLS_MAX 16384u
/* Sample rows kept per layer (AWQ's search is linear in them). */
#define SAMPLE_ROWS_MAX 65536u

static const char *const block_linears[] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",    NULL,
};

bool tp_optimize_linear_slot(const char *name, size_t *layer, size_t *which)
{
	const char *p = "model.layers.";
	size_t l = 0;
	if (strncmp(name, p, strlen(p)) != 0)
		return false;
	name += strlen(p);
	if (*name < '0' || *name > '9')
		return false;
	for (; *name >= '0' && *name <= '9'; name++) {
		if (l > (SIZE_MAX - 9) / 10)
			return false;
		l = l * 10 + (size_t)(*name - '0');
	}
	if (*name++ != '.')
		return false;
	for (size_t i = 0; block_linears[i]; i++)
		if (strcmp(name, block_linears[i]) == 0) {
			*layer = l;
			*which = i;
			return true;
		}
	return false;
}

bool tp_optimize_is_quantized(const char *name)
{
	size_t l, w;
	return tp_optimize_linear_slot(name, &l, &w);
}

typedef struct capture {
	tp_linear base;
	tp_linear *inner;
	tp_quant_calib *stats;
	/* The Hessian's sums on this device when set; its first failure into
	 * *rc (a forward cannot fail), reported once the feed is done. */
	const tp_calib_device *dev;
	int *rc;
} capture;

static const tp_linear_ops capture_ops;

/* The statistics of rows x[n][cols]: what a capture sees of its inputs. */
static void observe(const capture *c, const float *x, size_t n)
{
	tp_quant_calib *s = c->stats;
	size_t cols = s->cols;
	for (size_t t = 0; t < n; t++) {
		const float *row = x + t * cols;
		if (s->x && s->nx < s->x_max && (s->nsamples + t) % s->x_stride == 0)
			memcpy(s->x + s->nx++ * cols, row, cols * sizeof(float));
		for (size_t j = 0; j < cols; j++) {
			double v = row[j];
			s->abs_mean[j] += v < 0 ? -v : v; /* a sum until finished */
			s->sq_sum[j] += v * v;
		}
		if (s->hessian && !c->dev)
			for (size_t j = 0; j < cols; j++) {
				double v = row[j], *h = s->hessian + j * cols;
				/* Upper triangle only; mirrored when finished. */
				for (size_t k = j; k < cols; k++)
					h[k] += v * row[k];
			}
	}
	if (s->hessian && c->dev && *c->rc == 0)
		*c->rc = c->dev->hessian_add(c->dev->ctx, s, x, n);
	s->nsamples += n;
}

static void capture_forward(const tp_linear *l, const float *x, size_t n, float *y,
			    tp_pool *pool)
{
	const capture *c = (const capture *)l;
	observe(c, x, n);
	tp_linear_forward(c->inner, x, n, y, pool);
}

tp_linear *tp_quant_capture_inner(tp_linear *l)
{
	return l && l->ops == &capture_ops ? ((capture *)l)->inner : l;
}

bool tp_quant_capture_observe(tp_linear *l, const float *x, size_t n)
{
	if (!l || l->ops != &capture_ops)
		return false;
	observe((const capture *)l, x, n);
	return true;
}

static void capture_free(tp_linear *l)
{
	capture *c = (capture *)l;
	tp_linear_free(c->inner);
	free(c);
}

static size_t capture_bytes(const tp_linear *l)
{
	const tp_linear *in = ((const capture *)l)->inner;
	return in->ops->weight_bytes ? in->ops->weight_bytes(in) : 0;
}

static const tp_linear_ops capture_ops = { capture_forward, capture_free, capture_bytes };

int tp_quant_capture_new(tp_linear **out, tp_linear *inner, tp_quant_calib *stats)
{
	if (!inner || !stats || stats->cols != inner->in || !stats->abs_mean || !stats->sq_sum)
		return tp_error_set(TP_EINVAL, "capture: statistics do not fit the layer");
	capture *c = malloc(sizeof(*c));
	if (!c)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*c = (capture){ { &capture_ops, inner->in, inner->out }, inner, stats, NULL, NULL };
	*out = &c->base;
	return 0;
}

tp_linear *tp_quant_capture_release(tp_linear *l)
{
	capture *c = (capture *)l;
	tp_linear *inner = c->inner;
	free(c);
	return inner;
}

static void calib_clear(tp_quant_calib *c)
{
	free(c->abs_mean);
	free(c->sq_sum);
	free(c->hessian);
	free(c->x);
	*c = (tp_quant_calib){ 0 };
}

void tp_quant_calib_set_free(tp_quant_calib_set *s)
{
	for (size_t i = 0; i < s->count; i++) {
		if (s->names)
			free(s->names[i]);
		if (s->layers)
			calib_clear(&s->layers[i]);
	}
	free(s->names);
	free(s->layers);
	*s = (tp_quant_calib_set){ 0 };
}

const tp_quant_calib *tp_quant_calib_find(const tp_quant_calib_set *s, const char *name)
{
	for (size_t i = 0; s && i < s->count; i++)
		if (s->layers[i].cols && strcmp(s->names[i], name) == 0)
			return &s->layers[i];
	return NULL;
}

static int calib_alloc(tp_quant_calib *c, size_t cols, bool hessian, size_t rows,
		       size_t stride)
{
	if (hessian && cols > HESSIAN_COLS_MAX)
		return tp_error_set(TP_ETOOBIG, "a Hessian of %zu columns is too large", cols);
	if (rows && (rows > SAMPLE_ROWS_MAX || cols > SIZE_MAX / sizeof(float) / rows))
		return tp_error_set(TP_ETOOBIG, "%zu sample rows of %zu columns are too many", rows,
				    cols);
	c->cols = cols;
	c->abs_mean = calloc(cols, sizeof(double));
	c->sq_sum = calloc(cols, sizeof(double));
	c->hessian = hessian ? calloc(cols * cols, sizeof(double)) : NULL;
	c->x = rows ? malloc(rows * cols * sizeof(float)) : NULL;
	c->x_max = rows;
	c->x_stride = stride;
	if (!c->abs_mean || !c->sq_sum || (hessian && !c->hessian) || (rows && !c->x))
		return tp_error_set(TP_ENOMEM, "out of memory for calibration statistics");
	return 0;
}

void tp_quant_calib_finish(tp_quant_calib *c)
{
	for (size_t j = 0; j < c->cols; j++)
		c->abs_mean[j] = c->nsamples ? c->abs_mean[j] / (double)c->nsamples : 0;
	for (size_t j = 0; c->hessian && j < c->cols; j++)
		for (size_t k = 0; k < j; k++)
			c->hessian[j * c->cols + k] = c->hessian[k * c->cols + j];
}

/* Feed ids in windows of ctx tokens (BOS first in each when o->bos >= 0). */
static int feed(tp_model *m, const int32_t *ids, size_t n, const tp_calib_opts *o,
		size_t *fed)
{
	size_t ctx = o->ctx ? o->ctx : CTX_DEFAULT, pre = o->bos >= 0, step = ctx - pre;
	tp_kv *kv = NULL;
	int32_t *win = malloc(ctx * sizeof(*win));
	int rc = win ? tp_kv_new(&kv, m, ctx, ctx) : tp_error_set(TP_ENOMEM, "out of memory");
	*fed = 0;
	for (size_t b = 0; rc == 0 && b < n; b += step) {
		size_t len = n - b < step ? n - b : step;
		if (pre)
			win[0] = o->bos;
		memcpy(win + pre, ids + b, len * sizeof(*win));
		tp_kv_reset(kv);
		/* No logits wanted: logits_from == n. */
		rc = tp_model_forward(m, kv, win, len + pre, len + pre, NULL);
		*fed += len + pre;
	}
	tp_kv_free(kv);
	free(win);
	return rc;
}

int tp_optimize_calibrate(tp_model *m, const int32_t *ids, size_t n, const tp_calib_opts *o,
			  tp_quant_calib_set *out)
{
	size_t count = tp_model_linear_count(m), wrapped = 0;
	tp_quant_calib_set s = { 0 };
	const tp_calib_device *dev = o->hessian && o->device && o->device->hessian_add &&
					     o->device->hessian_take ? o->device : NULL;
	int rc = 0, dev_rc = 0;
	if (o->max_tokens && n > o->max_tokens)
		n = o->max_tokens;
	if (n == 0 || (o->ctx && o->ctx < 2))
		return tp_error_set(TP_EINVAL, "calibration needs tokens and a context of 2 or more");
	/* Rows the capture will see, so the kept ones spread over all of them. */
	size_t ctx = o->ctx ? o->ctx : CTX_DEFAULT, pre = o->bos >= 0, step = ctx - pre;
	size_t total = n + pre * ((n + step - 1) / step);
	size_t stride = o->sample_rows ? (total + o->sample_rows - 1) / o->sample_rows : 1;
	size_t last = o->last ? o->last : count;
	s.count = count;
	s.names = calloc(count, sizeof(*s.names));
	s.layers = calloc(count, sizeof(*s.layers));
	if (!s.names || !s.layers) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < count && rc == 0; i++) {
		const char *name = tp_model_linear_name(m, i);
		if (!(s.names[i] = strdup(name)))
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		if (rc < 0 || !tp_optimize_is_quantized(name) || i < o->first || i >= last)
			continue;
		tp_linear *inner = tp_model_linear(m, i), *cap = NULL, *old = NULL;
		if ((rc = calib_alloc(&s.layers[i], inner->in, o->hessian, o->sample_rows,
				      stride ? stride : 1)) < 0 ||
		    (rc = tp_quant_capture_new(&cap, inner, &s.layers[i])) < 0)
			break;
		((capture *)cap)->dev = dev;
		((capture *)cap)->rc = &dev_rc;
		if ((rc = tp_model_swap_linear(m, i, cap, &old)) < 0) {
			tp_quant_capture_release(cap);
			break;
		}
		wrapped++;
	}
	if (rc == 0)
		rc = o->feed ? o->feed(o->feed_ctx, m, &s.tokens) : feed(m, ids, n, o, &s.tokens);
done:
	/* Put every original layer back, whatever happened. */
	for (size_t i = 0; i < count && wrapped; i++) {
		if (!s.layers || !s.layers[i].cols || tp_model_linear(m, i)->ops != &capture_ops)
			continue;
		tp_linear *cap = tp_model_linear(m, i), *old = NULL;
		tp_linear *inner = ((capture *)cap)->inner;
		if (tp_model_swap_linear(m, i, inner, &old) == 0)
			tp_quant_capture_release(old);
		wrapped--;
	}
	if (rc == 0)
		rc = dev_rc;
	/* The device's sums back (or released), whatever happened. */
	for (size_t i = 0; dev && s.layers && i < count; i++) {
		if (!s.layers[i].device)
			continue;
		int trc = dev->hessian_take(dev->ctx, &s.layers[i], rc == 0);
		s.layers[i].device = NULL;
		if (rc == 0 && trc < 0)
			rc = trc;
	}
	if (rc < 0) {
		tp_quant_calib_set_free(&s);
		return rc;
	}
	for (size_t i = 0; i < count; i++)
		tp_quant_calib_finish(&s.layers[i]);
	*out = s;
	return 0;
}
