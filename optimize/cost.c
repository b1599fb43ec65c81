/* The roofline projection and the price of a million tokens. */
#include "tp_optimize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double tp_roofline_kv_bytes_per_pos(const tp_model_config *cfg)
{
	/* K and V, fp32, per layer and KV head (runtime/forward.c's cache). */
	return 2.0 * 4.0 * (double)cfg->layers * (double)cfg->kv_heads * (double)cfg->head_dim;
}

double tp_roofline_decode_tps(const tp_roofline_in *in, const tp_hw_profile *hw)
{
	double b = in->batch ? (double)in->batch : 1.0;
	if (hw->bandwidth_gbs <= 0)
		return 0;
	/* One step: the weights once for the whole batch, each sequence's KV. */
	double bytes = in->weight_bytes + b * in->kv_bytes_per_pos * (double)in->ctx;
	double t = bytes / (hw->bandwidth_gbs * 1e9);
	if (hw->peak_tflops > 0) {
		double flops = b * (2.0 * in->matmul_params + 4.0 * in->attn_dim * (double)in->ctx);
		double tc = flops / (hw->peak_tflops * 1e12);
		t = tc > t ? tc : t;
	}
	return t > 0 ? b / t : 0;
}

double tp_roofline_prefill_tps(const tp_roofline_in *in, const tp_hw_profile *hw)
{
	double b = in->batch ? (double)in->batch : 1.0, p = in->prompt ? (double)in->prompt : 1.0;
	if (hw->peak_tflops <= 0)
		return 0;
	/* Per token: the matmuls and attention over prompt/2 earlier positions
	 * on average (4 attn_dim FLOPs per position); the weights are read once
	 * per p x b tokens. */
	double tc = (2.0 * in->matmul_params + 2.0 * in->attn_dim * p) / (hw->peak_tflops * 1e12);
	double tm = hw->bandwidth_gbs > 0 ? in->weight_bytes / (hw->bandwidth_gbs * 1e9) / (p * b)
					  : 0;
	double t = tc > tm ? tc : tm;
	return t > 0 ? 1.0 / t : 0;
}

double tp_roofline_efficiency(double measured_tps, double roofline_tps)
{
	if (measured_tps <= 0 || roofline_tps <= 0)
		return 1;
	double e = measured_tps / roofline_tps;
	return e > 1 ? 1 : e;
}

double tp_cost_per_1m(double usd_per_hour, double tps)
{
	return tps > 0 ? usd_per_hour / (tps * 3600.0) * 1e6 : 0;
}

double tp_cost_blended(double prefill_cost, double decode_cost, double in_parts,
		       double out_parts)
{
	if (prefill_cost <= 0)
		return decode_cost;
	return (in_parts * prefill_cost + out_parts * decode_cost) / (in_parts + out_parts);
}

static bool parse_pos(const char *s, size_t len, double *out)
{
	char buf[64], *end;
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = 0;
	double v = strtod(buf, &end);
	if (*end || !isfinite(v) || v <= 0)
		return false;
	*out = v;
	return true;
}

bool tp_cost_parse_ratio(const char *s, double *in_parts, double *out_parts)
{
	const char *colon = strchr(s, ':');
	double a, b = 1;
	if (!colon)
		return parse_pos(s, strlen(s), &a) && (*in_parts = a, *out_parts = b, true);
	if (!parse_pos(s, (size_t)(colon - s), &a) || !parse_pos(colon + 1, strlen(colon + 1), &b))
		return false;
	*in_parts = a;
	*out_parts = b;
	return true;
}

tp_roofline_in tp_figures_roofline(const tp_figures_in *in)
{
	const tp_model_config *c = in->cfg;
	double params = (double)in->params, rest = params - (double)in->st->weights;
	double embed = (double)c->vocab * (double)c->hidden;
	return (tp_roofline_in){
		.weight_bytes = (double)in->st->packed_bytes + (rest > 0 ? rest : 0) *
								 in->source_bits / 8.0,
		.matmul_params = c->tie_embeddings || params <= embed ? params : params - embed,
		.kv_bytes_per_pos = tp_roofline_kv_bytes_per_pos(c),
		.attn_dim = (double)c->layers * (double)c->heads * (double)c->head_dim,
		.ctx = in->ctx,
		.prompt = in->sp->prefill_tokens,
		.batch = in->batch ? in->batch : 1,
	};
}

void tp_figures_compute(const tp_figures_in *in, tp_candidate_figures *out)
{
	const tp_speed_result *sp = in->sp;
	tp_roofline_in ri = tp_figures_roofline(in);
	size_t batch = ri.batch;
	*out = (tp_candidate_figures){
		.codec = in->codec,
		.bpw = in->st->bpw,
		.compression = in->st->compression,
		.ppl = in->r->ppl,
		.ppl_delta_pct = 100.0 * (in->r->ppl - in->base_ppl) / in->base_ppl,
		.kl_mean = in->r->kl_mean,
		.memory_gb = (ri.weight_bytes + (double)batch * ri.kv_bytes_per_pos * (double)in->ctx) /
			     1e9,
	};
	/* The local kernels' fraction of their own roofline, at batch 1. */
	ri.batch = 1;
	out->eff_decode = tp_roofline_efficiency(sp->decode_tps,
						 tp_roofline_decode_tps(&ri, in->local));
	out->eff_prefill = tp_roofline_efficiency(sp->prefill_tps,
						  tp_roofline_prefill_tps(&ri, in->local));
	ri.batch = batch;
	if (in->target->measured && batch == 1) {
		out->prefill_tps = sp->prefill_tps;
		out->throughput_tps = sp->decode_tps;
		out->latency_p50_ms = sp->latency_p50_ms;
		out->latency_p95_ms = sp->latency_p95_ms;
		out->latency_p99_ms = sp->latency_p99_ms;
	} else {
		out->projected = true;
		out->throughput_tps = tp_roofline_decode_tps(&ri, in->target) * out->eff_decode;
		out->prefill_tps = tp_roofline_prefill_tps(&ri, in->target) * out->eff_prefill;
		/* A step yields batch tokens; its time scales the measured spread. */
		double step_ms = out->throughput_tps > 0 ? 1e3 * (double)batch / out->throughput_tps
							 : 0;
		double k = sp->latency_mean_ms > 0 ? step_ms / sp->latency_mean_ms : 0;
		out->latency_p50_ms = sp->latency_p50_ms * k;
		out->latency_p95_ms = sp->latency_p95_ms * k;
		out->latency_p99_ms = sp->latency_p99_ms * k;
	}
	double usd = in->target->usd_per_hour;
	out->cost_prefill = tp_cost_per_1m(usd, out->prefill_tps);
	out->cost_decode = tp_cost_per_1m(usd, out->throughput_tps);
	out->cost_per_1m = tp_cost_blended(out->cost_prefill, out->cost_decode, in->io_in,
					   in->io_out);
}
