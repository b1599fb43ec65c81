/* The reports of an optimizer run: Markdown (what was measured, what was
 * projected, what won) and JSON. */
#include "tp_optimize.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hw_section(FILE *f, const char *title, const tp_hw_profile *h)
{
	fprintf(f, "### %s: %s\n\n", title, h->name);
	fprintf(f, "%s.\n\n", h->description[0] ? h->description : h->name);
	fprintf(f, "| figure | value |\n|---|---|\n");
	fprintf(f, "| memory | %.4g GB |\n", h->memory_gb);
	if (h->bandwidth_gbs > 0)
		fprintf(f, "| memory bandwidth | %.4g GB/s |\n", h->bandwidth_gbs);
	else
		fprintf(f, "| memory bandwidth | not measured (nothing was projected) |\n");
	if (h->peak_tflops > 0)
		fprintf(f, "| peak %s | %.4g TFLOP/s |\n", h->measured ? "fp32 GEMM" : "dense fp16/bf16",
			h->peak_tflops);
	else if (h->measured)
		fprintf(f, "| peak fp32 GEMM | not measured (nothing was projected) |\n");
	else
		fprintf(f, "| peak dense fp16/bf16 | not known (see the source note) |\n");
	if (h->int8_tops > 0)
		fprintf(f, "| peak int8 | %.4g TOP/s |\n", h->int8_tops);
	fprintf(f, "| price | $%.4g per hour |\n\n", h->usd_per_hour);
	fprintf(f, "- Price: %s (read %s). %s\n", h->price_source, h->price_read, h->price_note);
	fprintf(f, "- Figures: %s (read %s). %s\n\n", h->spec_source, h->spec_read, h->spec_note);
}

static void constraints_section(FILE *f, const tp_select_constraints *c)
{
	const struct {
		const char *flag;
		double v;
	} k[] = { { "--max-ppl-delta (%)", c->max_ppl_delta_pct },
		  { "--max-kl", c->max_kl },
		  { "--min-compression", c->min_compression },
		  { "--max-latency-p99-ms", c->max_latency_p99_ms },
		  { "--min-throughput (tok/s)", c->min_throughput_tps },
		  { "--max-memory-gb", c->max_memory_gb } };
	fprintf(f, "## Constraints\n\n");
	bool any = false;
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		if (!isnan(k[i].v)) {
			fprintf(f, "- `%s` %.6g\n", k[i].flag, k[i].v);
			any = true;
		}
	if (c->hw_memory_gb > 0)
		fprintf(f, "- the model must fit in the hardware's %.4g GB\n", c->hw_memory_gb);
	else if (!any)
		fprintf(f, "- none\n");
	fprintf(f, "\n");
}

static void table(FILE *f, const tp_candidate_figures *c, size_t n, long winner)
{
	fprintf(f, "| candidate | bpw | compr. | ΔPPL %% | KL mean | prefill tok/s | "
		   "decode tok/s | p50 / p95 / p99 ms | memory GB | $/1M in | $/1M out | "
		   "$/1M blended | speed | verdict |\n");
	fprintf(f, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n");
	for (size_t i = 0; i < n; i++) {
		const tp_candidate_figures *x = &c[i];
		fprintf(f, "| %s%s%s | %.3f | %.2f | %+.3f | %.6f | ", (long)i == winner ? "**" : "",
			x->codec, (long)i == winner ? "**" : "", x->bpw, x->compression,
			x->ppl_delta_pct, x->kl_mean);
		if (x->prefill_tps > 0)
			fprintf(f, "%.1f | ", x->prefill_tps);
		else
			fprintf(f, "n/a | ");
		fprintf(f, "%.1f | %.3f / %.3f / %.3f | %.4f | ", x->throughput_tps,
			x->latency_p50_ms, x->latency_p95_ms, x->latency_p99_ms, x->memory_gb);
		if (x->cost_prefill > 0)
			fprintf(f, "%.4g | ", x->cost_prefill);
		else
			fprintf(f, "n/a | ");
		fprintf(f, "%.4g | %.4g | %s | %s |\n", x->cost_decode, x->cost_per_1m,
			x->projected ? "projected" : "measured",
			(long)i == winner ? "**winner**" : x->passed ? "passes" : "rejected");
	}
	fprintf(f, "\n");
}

int tp_report_markdown_write(const char *path, const tp_report_info *r,
			     const tp_candidate_figures *c, size_t n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	const tp_select_result *s = r->sel;
	const tp_hw_profile *hw = r->hw;
	fprintf(f, "# tenpak optimize: %s on %s\n\n", r->model, hw->name);
	fprintf(f, "Baseline %s, perplexity %.4f on %s (%zu tokens, context %zu)%s.\n\n",
		r->baseline_codec, r->baseline_ppl, r->eval_text, r->eval_tokens, r->ctx,
		r->quick ? "; --quick run" : "");
	fprintf(f, "## Recommendation\n\n");
	if (s->winner >= 0) {
		const tp_candidate_figures *w = &c[s->winner];
		fprintf(f, "Serve **%s** on **%s**: $%.4g per 1M tokens (blended %g:%g input:output), "
			   "%.2fx smaller quantized layers, ΔPPL %+.3f%%, KL %.6f, decode %.1f "
			   "tokens/s, p99 %.3f ms per token, %.4f GB (%s speed). %zu of %zu "
			   "candidates meet the constraints; this is the cheapest of them.\n\n",
			w->codec, hw->name, w->cost_per_1m, r->io_in, r->io_out, w->compression,
			w->ppl_delta_pct, w->kl_mean, w->throughput_tps, w->latency_p99_ms,
			w->memory_gb, w->projected ? "projected" : "measured", s->passed, n);
	} else {
		fprintf(f, "**No candidate meets the constraints** (exit code 3). %s.\n\n",
			s->binding);
	}
	constraints_section(f, r->constraints);
	fprintf(f, "## Candidates\n\n");
	table(f, c, n, s->winner);
	bool any = false;
	for (size_t i = 0; i < n; i++)
		if (!c[i].passed) {
			if (!any)
				fprintf(f, "## Rejected\n\n");
			any = true;
			fprintf(f, "- %s\n", c[i].reason);
		}
	if (any)
		fprintf(f, "\n");
	if (r->nskipped) {
		fprintf(f, "## Skipped (budget %.0f s)\n\n", r->budget_s);
		for (size_t i = 0; i < r->nskipped; i++)
			if (r->skipped[i])
				fprintf(f, "- %s\n", r->skipped[i]);
		fprintf(f, "\n");
	}
	if (r->nfailed) {
		fprintf(f, "## Failed\n\n");
		for (size_t i = 0; i < r->nfailed; i++)
			if (r->failed[i])
				fprintf(f, "- %s\n", r->failed[i]);
		fprintf(f, "\n");
	}
	fprintf(f, "## Hardware\n\n");
	hw_section(f, "Target", hw);
	if (r->local && r->local != hw && strcmp(r->local->name, hw->name) != 0)
		hw_section(f, "Measured on", r->local);
	fprintf(f, "## How each figure was obtained\n\n");
	fprintf(f, "- Quality (ΔPPL, KL): measured on this machine against the unquantized model, "
		   "%zu evaluation tokens, context %zu%s.\n", r->eval_tokens, r->ctx,
		r->quick ? " (--quick)" : "");
	fprintf(f, "- Speed on %s: prefill of %zu tokens, then %zu decode steps each timed on its "
		   "own (p50/p95/p99 interpolate between the sorted step times), batch 1, with "
		   "the candidate's layers as the runtime holds them.\n",
		r->local ? r->local->name : "cpu-local", r->prompt, r->decode_steps);
	fprintf(f, "- `measured` figures are those timings (target %s, batch 1). `projected` "
		   "figures are the target's roofline for the candidate times the efficiency "
		   "the candidate reached on this machine against its own roofline (capped "
		   "at 1): decode moves the weights at the candidate's bits per weight plus the "
		   "KV cache at context %zu per step over the memory bandwidth; prefill costs "
		   "2 FLOPs per weight plus attention per token over the peak. Projected "
		   "latencies scale the measured percentiles by the same factor.\n", hw->name,
		r->ctx);
	fprintf(f, "- Memory: the weights at the candidate's bits per weight (the other "
		   "weights in the stored dtype) plus the runtime's fp32 KV cache at context %zu "
		   "for %zu sequence%s, in GB of 10^9 bytes.\n", r->ctx, r->batch,
		r->batch == 1 ? "" : "s");
	fprintf(f, "- Price: $/1M = $/hour / (tokens/s x 3600) x 10^6, for prefill (input) "
		   "and decode (output), blended %g:%g.\n", r->io_in, r->io_out);
	fprintf(f, "- Batch %zu: a decode step reads the weights once for all sequences of the "
		   "batch and each sequence's own KV cache, so until the step becomes compute "
		   "bound, throughput grows nearly %zu-fold while the latency of a token "
		   "stays that of one step; the KV cache (and memory) grows with the batch.\n",
		r->batch, r->batch);
	if (r->budget_s > 0)
		fprintf(f, "- Run time: %.1f s of a %.0f s budget.\n", r->elapsed_s, r->budget_s);
	int rc = 0;
	if (ferror(f))
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	if (fclose(f) != 0 && rc == 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	return rc;
}

int tp_optimize_outcome_write_markdown(const tp_optimize_outcome *o, const char *path)
{
	return tp_report_markdown_write(path, &o->info, o->figures, o->nfigures);
}

/* ---- JSON ---- */

/* The speed, memory and price fields of a candidate and of the winner. */
static void add_speed_json(cJSON *c, const tp_candidate_figures *f, const char *device)
{
	cJSON_AddNumberToObject(c, "latency_p50_ms", f->latency_p50_ms);
	cJSON_AddNumberToObject(c, "latency_p95_ms", f->latency_p95_ms);
	cJSON_AddNumberToObject(c, "latency_p99_ms", f->latency_p99_ms);
	cJSON_AddNumberToObject(c, "throughput_tps", f->throughput_tps);
	cJSON_AddNumberToObject(c, "prefill_tps", f->prefill_tps);
	cJSON_AddNumberToObject(c, "memory_gb", f->memory_gb);
	cJSON_AddNumberToObject(c, "cost_per_1m_tokens", f->cost_per_1m);
	cJSON_AddNumberToObject(c, "cost_per_1m_input", f->cost_prefill);
	cJSON_AddNumberToObject(c, "cost_per_1m_output", f->cost_decode);
	cJSON_AddStringToObject(c, "speed_source", f->projected ? "projected" : "measured");
	cJSON_AddStringToObject(c, "speed_device", device);
	if (f->projected) {
		cJSON *e = cJSON_AddObjectToObject(c, "efficiency");
		cJSON_AddNumberToObject(e, "decode", f->eff_decode);
		cJSON_AddNumberToObject(e, "prefill", f->eff_prefill);
	}
}

static void add_candidate_json(cJSON *arr, const tp_optimize_outcome *o, size_t i)
{
	const tp_optimize_candidate *oc = &o->candidates[i];
	const tp_candidate_figures *f = &o->figures[oc->fig];
	const tp_eval_result *r = &oc->r;
	double base_ppl = o->baseline.ppl;
	cJSON *c = cJSON_CreateObject();
	cJSON_AddStringToObject(c, "codec", oc->name);
	cJSON_AddNumberToObject(c, "bpw", oc->st.bpw);
	cJSON_AddNumberToObject(c, "compression", oc->st.compression);
	cJSON_AddNumberToObject(c, "ppl", r->ppl);
	cJSON_AddNumberToObject(c, "ppl_err", r->ppl_err);
	cJSON_AddNumberToObject(c, "ppl_delta", r->ppl - base_ppl);
	cJSON_AddNumberToObject(c, "ppl_delta_pct", 100.0 * (r->ppl - base_ppl) / base_ppl);
	cJSON_AddNumberToObject(c, "kl_mean", r->kl_mean);
	cJSON_AddNumberToObject(c, "kl_err", r->kl_err);
	cJSON_AddNumberToObject(c, "kl_p99", r->kl_p99);
	cJSON_AddNumberToObject(c, "kl_max", r->kl_max);
	cJSON_AddNumberToObject(c, "same_top_pct", r->same_top_pct);
	cJSON_AddNumberToObject(c, "same_top_err", r->same_top_err);
	cJSON_AddNumberToObject(c, "quant_seconds", oc->st.quant_seconds);
	cJSON_AddNumberToObject(c, "layers", (double)oc->st.layers);
	cJSON_AddNumberToObject(c, "weights", (double)oc->st.weights);
	cJSON_AddNumberToObject(c, "packed_bytes", (double)oc->st.packed_bytes);
	cJSON *m = cJSON_AddObjectToObject(c, "measured_local");
	cJSON_AddNumberToObject(m, "prefill_tokens", (double)oc->sp.prefill_tokens);
	cJSON_AddNumberToObject(m, "decode_tokens", (double)oc->sp.decode_tokens);
	cJSON_AddNumberToObject(m, "prefill_tps", oc->sp.prefill_tps);
	cJSON_AddNumberToObject(m, "decode_tps", oc->sp.decode_tps);
	cJSON_AddNumberToObject(m, "latency_p50_ms", oc->sp.latency_p50_ms);
	cJSON_AddNumberToObject(m, "latency_p95_ms", oc->sp.latency_p95_ms);
	cJSON_AddNumberToObject(m, "latency_p99_ms", oc->sp.latency_p99_ms);
	add_speed_json(c, f, o->measured_on);
	cJSON_AddBoolToObject(c, "passed", f->passed);
	/* The candidate's figures on each --compare profile. */
	if (o->ncompare) {
		cJSON *cmp = cJSON_AddObjectToObject(c, "compare");
		for (size_t k = 0; k < o->ncompare; k++) {
			tp_candidate_figures fk;
			tp_optimize_outcome_figures(o, i, &o->compare[k], &fk);
			add_speed_json(cJSON_AddObjectToObject(cmp, o->compare[k].name), &fk,
				       o->measured_on);
		}
	}
	/* Last (t0160 reads the layout line by line). */
	cJSON_AddArrayToObject(c, "fallbacks");
	cJSON_AddItemToArray(arr, c);
}

static void add_hardware_json(cJSON *o, const char *key, const tp_hw_profile *h)
{
	cJSON *j = cJSON_AddObjectToObject(o, key);
	cJSON_AddStringToObject(j, "name", h->name);
	cJSON_AddStringToObject(j, "description", h->description);
	cJSON_AddBoolToObject(j, "measured", h->measured);
	cJSON_AddNumberToObject(j, "memory_gb", h->memory_gb);
	cJSON_AddNumberToObject(j, "bandwidth_gbs", h->bandwidth_gbs);
	cJSON_AddNumberToObject(j, "peak_tflops", h->peak_tflops);
	cJSON_AddNumberToObject(j, "int8_tops", h->int8_tops);
	cJSON_AddNumberToObject(j, "usd_per_hour", h->usd_per_hour);
	cJSON_AddStringToObject(j, "price_source", h->price_source);
	cJSON_AddStringToObject(j, "price_read", h->price_read);
	cJSON_AddStringToObject(j, "spec_source", h->spec_source);
}

static void add_codec_reason(cJSON *arr, const char *codec, const char *reason)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "codec", codec);
	cJSON_AddStringToObject(j, "reason", reason);
	cJSON_AddItemToArray(arr, j);
}

/* Constraints, hardware, settings, rejected, skipped and the winner. */
static void add_selection_json(cJSON *j, const tp_optimize_outcome *o)
{
	const tp_select_constraints *c = &o->constraints;
	const struct {
		const char *key;
		double v;
	} lim[] = { { "max-ppl-delta", c->max_ppl_delta_pct },
		    { "max-kl", c->max_kl },
		    { "min-compression", c->min_compression },
		    { "max-latency-p99-ms", c->max_latency_p99_ms },
		    { "min-throughput", c->min_throughput_tps },
		    { "max-memory-gb", c->max_memory_gb } };
	cJSON *cj = cJSON_AddObjectToObject(j, "constraints");
	for (size_t k = 0; k < sizeof(lim) / sizeof(lim[0]); k++)
		if (!isnan(lim[k].v))
			cJSON_AddNumberToObject(cj, lim[k].key, lim[k].v);
	add_hardware_json(j, "hardware", &o->hw);
	add_hardware_json(j, "measured_on", &o->local);
	cJSON_AddStringToObject(j, "device", o->device == TP_OPTIMIZE_DEVICE_CUDA ? "cuda" : "cpu");
	if (o->device == TP_OPTIMIZE_DEVICE_CUDA)
		cJSON_AddStringToObject(j, "device_name", o->device_name);
	if (o->device_note[0])
		cJSON_AddStringToObject(j, "device_note", o->device_note);
	const tp_report_info *in = &o->info;
	cJSON *s = cJSON_AddObjectToObject(j, "settings");
	cJSON_AddNumberToObject(s, "batch", (double)in->batch);
	cJSON_AddNumberToObject(s, "io_in", in->io_in);
	cJSON_AddNumberToObject(s, "io_out", in->io_out);
	cJSON_AddNumberToObject(s, "ctx", (double)in->ctx);
	cJSON_AddNumberToObject(s, "prefill_tokens", (double)in->prompt);
	cJSON_AddNumberToObject(s, "decode_steps", (double)in->decode_steps);
	cJSON_AddBoolToObject(s, "quick", in->quick);
	cJSON_AddNumberToObject(s, "budget_s", in->budget_s);
	cJSON_AddNumberToObject(s, "elapsed_s", in->elapsed_s);
	cJSON *rej = cJSON_AddArrayToObject(j, "rejected");
	cJSON *skip = cJSON_AddArrayToObject(j, "skipped");
	for (size_t i = 0; i < o->ncandidates; i++) {
		const tp_optimize_candidate *x = &o->candidates[i];
		if (x->skipped)
			add_codec_reason(skip, x->name, x->error);
		else if (x->fig >= 0 && !o->figures[x->fig].passed)
			add_codec_reason(rej, x->name, o->figures[x->fig].reason);
	}
	if (o->sel.winner < 0) {
		cJSON_AddNullToObject(j, "winner");
		cJSON *b = cJSON_AddObjectToObject(j, "binding");
		cJSON_AddStringToObject(b, "constraint", o->sel.binding_flag);
		cJSON_AddStringToObject(b, "why", o->sel.binding);
		return;
	}
	const tp_candidate_figures *w = &o->figures[o->sel.winner];
	cJSON *wj = cJSON_AddObjectToObject(j, "winner");
	cJSON_AddStringToObject(wj, "codec", w->codec);
	cJSON_AddNumberToObject(wj, "compression", w->compression);
	cJSON_AddNumberToObject(wj, "ppl_delta", w->ppl - o->baseline.ppl);
	cJSON_AddNumberToObject(wj, "ppl_delta_pct", w->ppl_delta_pct);
	cJSON_AddNumberToObject(wj, "kl_mean", w->kl_mean);
	add_speed_json(wj, w, o->measured_on);
}

int tp_optimize_outcome_write_json(const tp_optimize_outcome *o, const char *path)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "model", o->model);
	cJSON *b = cJSON_AddObjectToObject(j, "baseline");
	cJSON_AddStringToObject(b, "codec", o->baseline_codec);
	cJSON_AddNumberToObject(b, "ppl", o->baseline.ppl);
	cJSON_AddNumberToObject(b, "ppl_err", o->baseline.ppl_err);
	cJSON *e = cJSON_AddObjectToObject(j, "eval");
	cJSON_AddStringToObject(e, "text", o->eval_text);
	cJSON_AddNumberToObject(e, "tokens", (double)o->baseline.tokens);
	cJSON_AddNumberToObject(e, "ctx", (double)o->baseline.ctx);
	cJSON_AddStringToObject(e, "mode", tp_ppl_mode_name(o->baseline.mode));
	cJSON_AddNumberToObject(e, "scored", (double)o->baseline.scored);
	cJSON *c = cJSON_AddObjectToObject(j, "calib");
	cJSON_AddStringToObject(c, "text", o->calib_text);
	cJSON_AddNumberToObject(c, "tokens", (double)o->calib_tokens);
	cJSON *all = cJSON_AddArrayToObject(j, "all_candidates");
	cJSON *failed = cJSON_AddArrayToObject(j, "failed");
	for (size_t i = 0; i < o->ncandidates; i++) {
		const tp_optimize_candidate *x = &o->candidates[i];
		if (x->skipped)
			continue;
		if (x->ok) {
			add_candidate_json(all, o, i);
			continue;
		}
		cJSON *f = cJSON_CreateObject();
		cJSON_AddStringToObject(f, "codec", x->name);
		cJSON_AddStringToObject(f, "error", x->error);
		cJSON_AddItemToArray(failed, f);
	}
	add_selection_json(j, o);
	char *txt = cJSON_Print(j);
	cJSON_Delete(j);
	if (!txt)
		return tp_error_set(TP_ENOMEM, "out of memory");
	FILE *f = fopen(path, "w");
	int rc = 0;
	if (!f || fputs(txt, f) == EOF || fputc('\n', f) == EOF)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	if (f && fclose(f) != 0 && rc == 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	free(txt);
	return rc;
}
