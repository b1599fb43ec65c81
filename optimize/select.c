/* Constraints, rejections with their reasons, and the winner. */
#include "tp_optimize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { C_PPL, C_KL, C_COMPR, C_P99, C_TPS, C_MEM, C_HWMEM, C_COUNT };

/* One constraint: its flag, how a reason names it, and which side passes. */
static const struct {
	const char *flag, *label, *unit;
	bool is_max; /* value <= limit passes */
} spec[C_COUNT] = {
	[C_PPL] = { "--max-ppl-delta", "ΔPPL", "%", true },
	[C_KL] = { "--max-kl", "KL", "", true },
	[C_COMPR] = { "--min-compression", "compression", "x", false },
	[C_P99] = { "--max-latency-p99-ms", "p99 latency", " ms", true },
	[C_TPS] = { "--min-throughput", "throughput", " tok/s", false },
	[C_MEM] = { "--max-memory-gb", "memory", " GB", true },
	[C_HWMEM] = { "", "memory", " GB", true },
};

static double limit_of(const tp_select_constraints *c, int k)
{
	switch (k) {
	case C_PPL: return c->max_ppl_delta_pct;
	case C_KL: return c->max_kl;
	case C_COMPR: return c->min_compression;
	case C_P99: return c->max_latency_p99_ms;
	case C_TPS: return c->min_throughput_tps;
	case C_MEM: return c->max_memory_gb;
	default: return c->hw_memory_gb > 0 ? c->hw_memory_gb : NAN;
	}
}

static double value_of(const tp_candidate_figures *f, int k)
{
	switch (k) {
	case C_PPL: return f->ppl_delta_pct;
	case C_KL: return f->kl_mean;
	case C_COMPR: return f->compression;
	case C_P99: return f->latency_p99_ms;
	case C_TPS: return f->throughput_tps;
	default: return f->memory_gb;
	}
}

/* True when f breaks constraint k (set). A figure that could not be
 * obtained (0 throughput or latency) breaks a speed constraint. */
static bool breaks(const tp_candidate_figures *f, const tp_select_constraints *c, int k)
{
	double lim = limit_of(c, k), v = value_of(f, k);
	if (isnan(lim))
		return false;
	if ((k == C_P99 || k == C_TPS) && v <= 0)
		return true;
	return spec[k].is_max ? v > lim : v < lim;
}

tp_select_constraints tp_select_constraints_none(void)
{
	return (tp_select_constraints){ NAN, NAN, NAN, NAN, NAN, NAN, 0 };
}

int tp_select_constraint_set(tp_select_constraints *c, const char *flag, const char *value)
{
	char *end;
	double v = value ? strtod(value, &end) : NAN;
	if (!value || end == value || *end || !isfinite(v) || v < 0)
		return tp_error_set(TP_EINVAL, "%s: '%s' is not a number >= 0", flag,
				    value ? value : "");
	double *slot[C_COUNT - 1] = { &c->max_ppl_delta_pct, &c->max_kl, &c->min_compression,
				      &c->max_latency_p99_ms, &c->min_throughput_tps,
				      &c->max_memory_gb };
	for (int k = 0; k < C_HWMEM; k++)
		if (strcmp(flag, spec[k].flag) == 0) {
			*slot[k] = v;
			return 0;
		}
	return tp_error_set(TP_EINVAL, "unknown constraint %s", flag);
}

/* "ΔPPL 2.41% > 2%" for f and constraint k into out. */
static void describe(const tp_candidate_figures *f, const tp_select_constraints *c, int k,
		     char *out, size_t cap)
{
	double v = value_of(f, k), lim = limit_of(c, k);
	if ((k == C_P99 || k == C_TPS) && v <= 0) {
		snprintf(out, cap, "%s not measured", spec[k].label);
		return;
	}
	snprintf(out, cap, "%s %.4g%s %s %.4g%s%s", spec[k].label, v, spec[k].unit,
		 spec[k].is_max ? ">" : "<", lim, spec[k].unit,
		 k == C_HWMEM ? " (the hardware's memory)" : "");
}

static bool cheaper(const tp_candidate_figures *a, const tp_candidate_figures *b)
{
	double scale = fmax(fabs(a->cost_per_1m), fabs(b->cost_per_1m));
	if (fabs(a->cost_per_1m - b->cost_per_1m) > 1e-9 * scale)
		return a->cost_per_1m < b->cost_per_1m;
	if (a->kl_mean != b->kl_mean)
		return a->kl_mean < b->kl_mean;
	return a->ppl_delta_pct < b->ppl_delta_pct;
}

/* None passes: name the constraint that binds and by how much. */
static void find_binding(const tp_candidate_figures *f, size_t n, const tp_select_constraints *c,
			 tp_select_result *out)
{
	int best = -1, most = -1;
	size_t most_n = 0, best_i = 0;
	double best_rel = INFINITY, best_need = 0;
	if (n == 0) {
		snprintf(out->binding, sizeof(out->binding), "no candidate was measured");
		return;
	}
	for (int k = 0; k < C_COUNT; k++) {
		double lim = limit_of(c, k);
		if (isnan(lim))
			continue;
		size_t nb = 0;
		for (size_t i = 0; i < n; i++) {
			if (!breaks(&f[i], c, k))
				continue;
			nb++;
			bool only = true; /* breaks k and nothing else */
			for (int o = 0; o < C_COUNT && only; o++)
				only = o == k || !breaks(&f[i], c, o);
			double v = value_of(&f[i], k);
			if (!only || v <= 0)
				continue;
			double rel = fabs(v - lim) / (lim > 0 ? lim : 1);
			if (rel < best_rel) {
				best_rel = rel;
				best = k;
				best_i = i;
				best_need = v;
			}
		}
		if (most < 0 || nb > most_n) {
			most = k;
			most_n = nb;
		}
	}
	if (best >= 0) {
		double lim = limit_of(c, best);
		snprintf(out->binding_flag, sizeof(out->binding_flag), "%s", spec[best].flag);
		if (best == C_HWMEM)
			snprintf(out->binding, sizeof(out->binding),
				 "the hardware's memory binds: %s needs %.4g GB, %.4g GB more than "
				 "the %.4g GB it has", f[best_i].codec, best_need, best_need - lim, lim);
		else
			snprintf(out->binding, sizeof(out->binding),
				 "%s %.4g binds: %s meets every other constraint but has %s %.4g%s; "
				 "%s %.4g would admit it (%.4g%s %s)", spec[best].flag, lim,
				 f[best_i].codec, spec[best].label, best_need, spec[best].unit,
				 spec[best].flag, best_need, fabs(best_need - lim), spec[best].unit,
				 spec[best].is_max ? "more" : "less");
		return;
	}
	if (most < 0) /* n > 0 and nothing rejects: not reached from tp_select_run */
		return;
	snprintf(out->binding_flag, sizeof(out->binding_flag), "%s", spec[most].flag);
	snprintf(out->binding, sizeof(out->binding),
		 "%s%s%.4g binds: it rejects %zu of %zu candidates; relaxing it alone admits none, "
		 "every candidate breaks another constraint too", spec[most].flag,
		 most == C_HWMEM ? "the hardware's memory " : " ", limit_of(c, most), most_n, n);
}

void tp_select_run(tp_candidate_figures *f, size_t n, const tp_select_constraints *c,
		   tp_select_result *out)
{
	*out = (tp_select_result){ .winner = -1 };
	for (size_t i = 0; i < n; i++) {
		f[i].passed = true;
		int len = snprintf(f[i].reason, sizeof(f[i].reason), "%s:", f[i].codec);
		for (int k = 0; k < C_COUNT; k++) {
			if (!breaks(&f[i], c, k))
				continue;
			char d[160];
			describe(&f[i], c, k, d, sizeof(d));
			if (len >= 0 && (size_t)len < sizeof(f[i].reason))
				len += snprintf(f[i].reason + len, sizeof(f[i].reason) - (size_t)len,
						"%s %s", f[i].passed ? "" : ";", d);
			f[i].passed = false;
		}
		if (f[i].passed) {
			f[i].reason[0] = 0;
			out->passed++;
			if (out->winner < 0 || cheaper(&f[i], &f[out->winner]))
				out->winner = (long)i;
		}
	}
	if (out->winner < 0)
		find_binding(f, n, c, out);
}
