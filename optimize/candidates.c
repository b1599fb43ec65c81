/* Candidates: a model loaded with its quantized layers packed in a format
 * (tp_quant_linear_new), to measure what the format costs in quality; and
 * the baseline, packed in its stored dtype. No layer is held as fp32 except
 * where the source is fp32. */
#include "quant_internal.h"
#include "tp_delta.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double tp_quant_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void tp_candidate_stats_count(tp_candidate_stats *st, size_t rows, size_t cols, size_t packed,
			      unsigned source_bits)
{
	st->weights += (uint64_t)rows * cols;
	st->packed_bytes += packed;
	st->source_bytes += (uint64_t)rows * cols * source_bits / 8;
	st->layers++;
}

int tp_candidate_stats_finish(tp_candidate_stats *st, const char *dir)
{
	if (st->layers == 0 || st->packed_bytes == 0)
		return tp_error_set(TP_EINVAL, "%s: no layer was quantized", dir);
	st->bpw = 8.0 * (double)st->packed_bytes / (double)st->weights;
	st->compression = (double)st->source_bytes / (double)st->packed_bytes;
	return 0;
}

int tp_optimize_weights_path(const char *dir, const char *weights, char **out)
{
	char *path = NULL;
	int rc = 0;
	if (weights)
		path = strdup(weights);
	else if ((rc = tp_path_join(&path, dir, "model.safetensors")) == 0 &&
		 !tp_fs_is_regular(path)) {
		free(path);
		path = NULL;
		rc = tp_path_join(&path, dir, "model.safetensors.index.json");
	}
	if (rc < 0)
		return rc;
	if (!path)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*out = path;
	return 0;
}

int tp_optimize_source_dtype(const char *dir, const char *weights, const char **codec,
			     unsigned *bits)
{
	char *path = NULL, **shards = NULL;
	size_t nshards = 0;
	tp_safetensors *st = NULL;
	int rc = 0;
	if ((rc = tp_optimize_weights_path(dir, weights, &path)) < 0)
		goto done;
	if (tp_safetensors_is_index(path)) {
		if ((rc = tp_safetensors_index_shards(&shards, &nshards, path)) < 0)
			goto done;
	}
	/* The first quantized layer's dtype stands for all of them. */
	for (size_t i = 0; i < (shards ? nshards : 1) && rc == 0; i++) {
		if ((rc = tp_safetensors_open(&st, shards ? shards[i] : path)) < 0)
			break;
		const tp_st_tensor *t = tp_safetensors_find(st, "model.layers.0.self_attn.q_proj.weight");
		if (t) {
			switch (t->dtype) {
			case TP_DTYPE_BF16: *codec = "bf16"; *bits = 16; break;
			case TP_DTYPE_F16: *codec = "fp16"; *bits = 16; break;
			case TP_DTYPE_F32: *codec = "fp32"; *bits = 32; break;
			default:
				rc = tp_error_set(TP_EUNSUPPORTED, "%s: dtype %s", path,
						  tp_dtype_name(t->dtype));
			}
			goto done;
		}
		tp_safetensors_free(st);
		st = NULL;
	}
	if (rc == 0)
		rc = tp_error_set(TP_ENOTFOUND, "%s has no model.layers.0.self_attn.q_proj.weight",
				  path);
done:
	tp_safetensors_free(st);
	if (shards)
		tp_safetensors_shards_free(shards, nshards);
	free(path);
	return rc;
}

/* The packed format of a stored dtype ("bf16", "fp16"), or NULL (fp32:
 * the dense layer is already its exact form). */
static const tp_quant_format *source_format(const char *codec)
{
	if (!codec || strcmp(codec, "fp32") == 0)
		return NULL;
	return tp_quant_format_find(codec);
}

typedef struct factory {
	const tp_quant_format *f;    /* the candidate's format (NULL: baseline) */
	const tp_quant_format *head; /* lm_head's: the source dtype, or NULL (dense) */
	const tp_quant_format *src;  /* the baseline's decoder layers */
	const tp_quant_calib_set *calib;
	unsigned source_bits;
	tp_candidate_stats st;
} factory;

/* Pack w in f into a new layer. */
static int pack_layer(const tp_quant_format *f, const char *name, const float *w,
		      const float *bias, size_t out_dim, size_t in_dim, const tp_quant_calib *calib,
		      double *seconds, tp_linear **made)
{
	size_t psize = f->packed_size(out_dim, in_dim);
	void *packed = malloc(psize ? psize : 1);
	if (!packed)
		return tp_error_set(TP_ENOMEM, "%s: out of memory for %zu packed bytes", name,
				    psize);
	double t0 = tp_quant_now_s();
	int rc = f->quantize(w, out_dim, in_dim, calib, packed);
	if (seconds)
		*seconds += tp_quant_now_s() - t0;
	if (rc < 0)
		tp_error_wrap(rc, "%s: %s", name, f->name);
	else
		rc = tp_quant_linear_new(made, f, packed, out_dim, in_dim, bias);
	if (rc < 0)
		free(packed);
	return rc;
}

static int make_linear(void *ctx, const char *name, const float *w, const float *bias,
		       size_t out_dim, size_t in_dim, tp_linear **made)
{
	factory *fa = ctx;
	if (!tp_optimize_is_quantized(name)) {
		if (!fa->head || strcmp(name, "lm_head") != 0)
			return TP_ENOTFOUND;
		return pack_layer(fa->head, name, w, bias, out_dim, in_dim, NULL, NULL, made);
	}
	if (!fa->f) {
		if (!fa->src)
			return TP_ENOTFOUND;
		return pack_layer(fa->src, name, w, bias, out_dim, in_dim, NULL, NULL, made);
	}
	int rc = pack_layer(fa->f, name, w, bias, out_dim, in_dim,
			    tp_quant_calib_find(fa->calib, name), &fa->st.quant_seconds, made);
	if (rc == 0)
		tp_candidate_stats_count(&fa->st, out_dim, in_dim,
					 fa->f->packed_size(out_dim, in_dim), fa->source_bits);
	return rc;
}

int tp_optimize_baseline_load(tp_model **out, const char *dir, const tp_model_opts *opts)
{
	const char *codec = NULL;
	unsigned bits = 0;
	int rc = tp_optimize_source_dtype(dir, opts ? opts->weights : NULL, &codec, &bits);
	if (rc < 0)
		return rc;
	factory fa = { .src = source_format(codec), .head = source_format(codec) };
	tp_model_opts o = opts ? *opts : (tp_model_opts){ 0 };
	o.make_linear = make_linear;
	o.make_linear_ctx = &fa;
	return tp_model_load(out, dir, &o);
}

const tp_quant_format *tp_optimize_head_format(const char *dir, const char *weights)
{
	const char *codec = NULL;
	unsigned bits = 0;
	if (tp_optimize_source_dtype(dir, weights, &codec, &bits) < 0)
		return NULL;
	return source_format(codec);
}

int tp_optimize_candidate_load(tp_model **out, const char *dir, const tp_model_opts *opts,
			       const char *name, const tp_candidate_calib *calib,
			       unsigned source_bits, tp_candidate_stats *stats)
{
	if (tp_optimize_is_method(name))
		return tp_optimize_method_load(out, dir, opts, name, calib, source_bits, stats);
	factory fa = { .f = tp_quant_format_find(name), .calib = calib ? calib->stats : NULL,
		       .source_bits = source_bits };
	if (!fa.f)
		return tp_error_set(TP_ENOTFOUND, "unknown candidate '%s'", name);
	fa.head = tp_optimize_head_format(dir, opts->weights);
	tp_model_opts o = *opts;
	o.make_linear = make_linear;
	o.make_linear_ctx = &fa;
	tp_model *m = NULL;
	int rc = tp_model_load(&m, dir, &o);
	if (rc < 0)
		return rc;
	if ((rc = tp_candidate_stats_finish(&fa.st, dir)) < 0) {
		tp_model_free(m);
		return rc;
	}
	*stats = fa.st;
	*out = m;
	return 0;
}
