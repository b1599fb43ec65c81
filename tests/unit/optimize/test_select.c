/* Hardware profiles, the roofline and price arithmetic (hand-computed
 * values), constraints and selection, and the report writers. */
#include "opt_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) <= 1e-9 * fmax(1.0, fabs((double)(b))))

static void test_profiles(void)
{
	const char *const *names = tp_hw_profile_names();
	const char *want[] = { "t4", "l4", "a10g", "l40s", "a100-80gb", "h100", "h200", "cpu-local" };
	for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
		bool found = false;
		for (size_t i = 0; names[i]; i++)
			found |= strcmp(names[i], want[w]) == 0;
		CHECK(found);
	}
	for (size_t i = 0; names[i]; i++) {
		tp_hw_profile p;
		CHECK_EQ_INT(tp_hw_profile_load(names[i], &p), 0);
		CHECK_STR(p.name, names[i]);
		/* Every price names its source and the day it was read. */
		CHECK(strncmp(p.price_source, "https://", 8) == 0 && p.price_read[0]);
		CHECK(p.spec_source[0] && p.spec_note[0]);
		if (!p.measured)
			CHECK(p.usd_per_hour > 0 && p.bandwidth_gbs > 0 && p.memory_gb > 0);
		else
			CHECK(p.usd_per_hour_per_thread > 0);
	}
	tp_hw_profile p;
	CHECK_EQ_INT(tp_hw_profile_load("H100", &p), 0); /* case-insensitive */
	CHECK(p.bandwidth_gbs == 3350 && p.usd_per_hour == 10);
	CHECK_EQ_INT(tp_hw_profile_load("a10g", &p), 0);
	CHECK(p.peak_tflops == 0); /* not found in a source: unknown, not invented */
	CHECK_EQ_INT(tp_hw_profile_load("nope", &p), TP_ENOTFOUND);
	CHECK(strstr(tp_error_last(), "h200") != NULL);
	/* A user's file. */
	char path[] = "/tmp/tp-hw-XXXXXX";
	int fd = mkstemp(path);
	const char *js = "{\"name\": \"mygpu\", \"memory_gb\": 12, \"bandwidth_gbs\": 500, "
			 "\"peak_tflops\": 50, \"usd_per_hour\": 0.7}";
	CHECK(fd >= 0 && write(fd, js, strlen(js)) == (ssize_t)strlen(js));
	close(fd);
	CHECK_EQ_INT(tp_hw_profile_load(path, &p), 0);
	CHECK(strcmp(p.name, "mygpu") == 0 && p.usd_per_hour == 0.7 && p.peak_tflops == 50);
	unlink(path);
	const char *bad[] = { "[]", "{\"name\": \"x\"}", "{\"usd_per_hour\": 1}",
			      "{\"name\": \"x\", \"usd_per_hour\": -1, \"bandwidth_gbs\": 1}",
			      "{\"name\": \"x\", \"usd_per_hour\": \"1\", \"bandwidth_gbs\": 1}", "{" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ_INT(tp_hw_profile_parse(bad[i], strlen(bad[i]), &p), TP_EINVAL);
}

static void test_roofline(void)
{
	tp_hw_profile hw = { .bandwidth_gbs = 1000, .peak_tflops = 100, .usd_per_hour = 2.5 };
	tp_roofline_in in = { .weight_bytes = 1e9, .matmul_params = 2e9, .kv_bytes_per_pos = 1e5,
			      .attn_dim = 4096, .ctx = 1000, .prompt = 500, .batch = 1 };
	/* Decode: (1e9 + 1e5 x 1000) B / 1e12 B/s = 1.1 ms per step; compute
	 * 4.016384e9 FLOP / 1e14 = 40 us is not the bound. */
	CHECK(NEAR(tp_roofline_decode_tps(&in, &hw), 1.0 / 1.1e-3));
	/* Batch 8: 1.8e9 B per step for 8 tokens. */
	in.batch = 8;
	CHECK(NEAR(tp_roofline_decode_tps(&in, &hw), 8.0 / 1.8e-3));
	/* Compute bound when the peak is low: 8 x 4.016384e9 FLOP / 1e13. */
	tp_hw_profile slow = hw;
	slow.peak_tflops = 10;
	CHECK(NEAR(tp_roofline_decode_tps(&in, &slow), 8.0 / (8 * 4.016384e9 / 1e13)));
	in.batch = 1;
	/* Prefill: (4e9 + 2 x 4096 x 500) / 1e14 s per token; the weights,
	 * 1e9 B once per 500 tokens = 2 us, do not bind. */
	CHECK(NEAR(tp_roofline_prefill_tps(&in, &hw), 1.0 / 4.004096e-5));
	/* Unknown figures project nothing. */
	tp_hw_profile nopeak = hw;
	nopeak.peak_tflops = 0;
	CHECK(tp_roofline_prefill_tps(&in, &nopeak) == 0);
	CHECK(NEAR(tp_roofline_decode_tps(&in, &nopeak), 1.0 / 1.1e-3));
	tp_model_config cfg = { .layers = 2, .kv_heads = 2, .head_dim = 4 };
	CHECK(tp_roofline_kv_bytes_per_pos(&cfg) == 2 * 4 * 2 * 2 * 4);
	CHECK(tp_roofline_efficiency(50, 100) == 0.5);
	CHECK(tp_roofline_efficiency(150, 100) == 1);
	CHECK(tp_roofline_efficiency(0, 100) == 1);
	/* $2.5/hour at 1e6/1.1e3 tokens/s: 2.5 / (909.09 x 3600) x 1e6. */
	CHECK(NEAR(tp_cost_per_1m(2.5, 1.0 / 1.1e-3), 0.76388888888888888));
	CHECK(tp_cost_per_1m(2.5, 0) == 0);
	CHECK(NEAR(tp_cost_blended(0.1, 0.7, 3, 1), 0.25));
	CHECK(NEAR(tp_cost_blended(0, 0.7, 3, 1), 0.7));
	double a = 0, b = 0;
	CHECK(tp_cost_parse_ratio("3:1", &a, &b) && a == 3 && b == 1);
	CHECK(tp_cost_parse_ratio("1.5", &a, &b) && a == 1.5 && b == 1);
	const char *bad[] = { "0:1", "3:", ":1", "a:b", "3:1:2", "", "-1:1", "1:inf" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!tp_cost_parse_ratio(bad[i], &a, &b));
}

static void test_figures(void)
{
	tp_model_config cfg = { .layers = 2, .heads = 2, .kv_heads = 2, .head_dim = 4, .vocab = 10,
				.hidden = 8 };
	tp_candidate_stats st = { .weights = 100, .packed_bytes = 50, .bpw = 4, .compression = 4 };
	tp_eval_result r = { .ppl = 10.5, .kl_mean = 0.01 };
	tp_speed_result sp = { 32, 16, 1000, 100, 9, 10, 12, 10 };
	tp_hw_profile local = { .measured = true, .bandwidth_gbs = 1e-3, .peak_tflops = 1e-6,
				.usd_per_hour = 0.1 };
	tp_hw_profile gpu = { .bandwidth_gbs = 1e-2, .peak_tflops = 1e-5, .usd_per_hour = 1 };
	tp_figures_in in = { "x", &st, &r, 10, &sp, &cfg, 200, 16, 64, 1, 3, 1, &local, &local };
	tp_roofline_in ri = tp_figures_roofline(&in);
	/* 50 packed bytes + 100 other weights at 2 bytes; all but the 80
	 * embedding weights multiply; 128 KV bytes per position. */
	CHECK(ri.weight_bytes == 250 && ri.matmul_params == 120 && ri.kv_bytes_per_pos == 128);
	CHECK(ri.attn_dim == 16 && ri.prompt == 32);
	/* Locally: 8442 B per step at 1e6 B/s (4336 FLOP at 1e6/s is faster). */
	CHECK(NEAR(tp_roofline_decode_tps(&ri, &local), 1e6 / 8442.0));
	tp_candidate_figures f;
	tp_figures_compute(&in, &f);
	CHECK(!f.projected && f.throughput_tps == 100 && f.prefill_tps == 1000);
	CHECK(f.latency_p99_ms == 12 && NEAR(f.ppl_delta_pct, 5));
	CHECK(NEAR(f.memory_gb, (250 + 128 * 64) / 1e9));
	CHECK(NEAR(f.cost_decode, 0.1 / 360000 * 1e6) && NEAR(f.cost_prefill, 0.1 / 3600000 * 1e6));
	CHECK(NEAR(f.cost_per_1m, (3 * f.cost_prefill + f.cost_decode) / 4));
	/* Projected: the target's roofline x the local fraction of its own. */
	in.target = &gpu;
	tp_figures_compute(&in, &f);
	double eff = tp_roofline_efficiency(100, tp_roofline_decode_tps(&ri, &local));
	CHECK(f.projected && eff < 1 && NEAR(f.eff_decode, eff));
	CHECK(NEAR(f.throughput_tps, tp_roofline_decode_tps(&ri, &gpu) * eff));
	/* Latencies keep the measured spread around the projected step. */
	CHECK(NEAR(f.latency_p99_ms / f.latency_p50_ms, 12.0 / 9.0));
	CHECK(NEAR(f.latency_p50_ms, 9.0 * (1e3 / f.throughput_tps) / 10.0));
	/* Batch 4 holds 4 KV caches and moves to the projected side. */
	in.target = &local;
	in.batch = 4;
	tp_figures_compute(&in, &f);
	CHECK(f.projected && NEAR(f.memory_gb, (250 + 4 * 128 * 64) / 1e9));
}

static tp_candidate_figures cand(const char *name, double cost, double kl, double dppl)
{
	return (tp_candidate_figures){ .codec = name, .cost_per_1m = cost, .kl_mean = kl,
				       .ppl_delta_pct = dppl, .compression = 4,
				       .throughput_tps = 100, .latency_p99_ms = 5,
				       .memory_gb = 2 };
}

static void test_select(void)
{
	tp_select_constraints c = tp_select_constraints_none();
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-ppl-delta", "2.0"), 0);
	CHECK(c.max_ppl_delta_pct == 2.0 && isnan(c.max_kl));
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", "-1"), TP_EINVAL);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", "abc"), TP_EINVAL);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", ""), TP_EINVAL);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", "nan"), TP_EINVAL);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--bogus", "1"), TP_EINVAL);
	CHECK(isnan(c.max_kl));
	/* awq4_g256 is cheapest but breaks ΔPPL; a and b tie on cost, b has
	 * the lower KL. */
	tp_candidate_figures f[3] = { cand("a", 1.0, 0.01, 1.0), cand("awq4_g256", 0.5, 0.02, 2.4),
				      cand("b", 1.0 + 1e-12, 0.005, 1.5) };
	tp_select_result s;
	tp_select_run(f, 3, &c, &s);
	CHECK_EQ_INT(s.winner, 2);
	CHECK_EQ_INT(s.passed, 2);
	CHECK(!f[1].passed && f[0].passed && f[2].passed);
	CHECK_STR(f[1].reason, "awq4_g256: ΔPPL 2.4% > 2%");
	CHECK(f[0].reason[0] == 0);
	/* Ties on cost and KL: lower ΔPPL, then the earlier one. */
	f[0].kl_mean = 0.005;
	tp_select_run(f, 3, &c, &s);
	CHECK_EQ_INT(s.winner, 0);
	f[2].ppl_delta_pct = 1.0;
	tp_select_run(f, 3, &c, &s);
	CHECK_EQ_INT(s.winner, 0);
	/* No candidate passes: KL binds, b (0.004) and a (0.005) break only it. */
	f[2].kl_mean = 0.004;
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", "0.001"), 0);
	tp_select_run(f, 3, &c, &s);
	CHECK_EQ_INT(s.winner, -1);
	CHECK_EQ_INT(s.passed, 0);
	CHECK_STR(s.binding_flag, "--max-kl");
	CHECK(strstr(s.binding, "b meets every other constraint but has KL 0.004") != NULL);
	CHECK(strstr(s.binding, "--max-kl 0.004 would admit it (0.003 more)") != NULL);
	CHECK_STR(f[1].reason, "awq4_g256: ΔPPL 2.4% > 2%; KL 0.02 > 0.001");
	/* Every candidate breaks two: the one rejecting most binds, and the
	 * text says relaxing it alone is not enough. */
	c = tp_select_constraints_none();
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-kl", "0.001"), 0);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--min-compression", "5"), 0);
	tp_select_run(f, 3, &c, &s);
	CHECK_EQ_INT(s.winner, -1);
	CHECK(strstr(s.binding, "rejects 3 of 3") && strstr(s.binding, "admits none"));
	CHECK_STR(f[0].reason, "a: KL 0.005 > 0.001; compression 4x < 5x");
	/* Lower bounds, unmeasured speed and the hardware's memory. */
	c = tp_select_constraints_none();
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--min-throughput", "50"), 0);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-latency-p99-ms", "10"), 0);
	CHECK_EQ_INT(tp_select_constraint_set(&c, "--max-memory-gb", "3"), 0);
	f[0].throughput_tps = 0;
	f[1].latency_p99_ms = 11;
	f[2].memory_gb = 3.5;
	tp_select_run(f, 3, &c, &s);
	CHECK_STR(f[0].reason, "a: throughput not measured");
	CHECK_STR(f[1].reason, "awq4_g256: p99 latency 11 ms > 10 ms");
	CHECK_STR(f[2].reason, "b: memory 3.5 GB > 3 GB");
	CHECK_STR(s.binding_flag, "--max-latency-p99-ms");
	c = tp_select_constraints_none();
	c.hw_memory_gb = 1;
	tp_select_run(f, 3, &c, &s);
	CHECK(s.winner == -1 && s.binding_flag[0] == 0);
	CHECK(strstr(s.binding, "the hardware's memory binds") != NULL);
	CHECK(strstr(f[0].reason, "(the hardware's memory)") != NULL);
	/* Nothing measured at all. */
	tp_select_run(f, 0, &c, &s);
	CHECK(s.winner == -1 && strstr(s.binding, "no candidate") != NULL);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = calloc(1, 1 << 20);
	if (f && buf)
		fread(buf, 1, (1 << 20) - 1, f);
	if (f)
		fclose(f);
	return buf;
}

static size_t count(const char *s, const char *what)
{
	size_t n = 0;
	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

static void test_reports(void)
{
	tp_candidate_figures f[4] = { cand("a<&>", 1.0, 0.01, 1.0), cand("b", 0.5, 0.02, 2.4),
				      cand("c", 2.0, 0.001, 0.1), cand("bf16", 3.0, 0, 0) };
	tp_select_constraints c = tp_select_constraints_none();
	tp_select_constraint_set(&c, "--max-ppl-delta", "2");
	tp_select_result s;
	tp_select_run(f, 4, &c, &s);
	tp_hw_profile hw;
	CHECK_EQ_INT(tp_hw_profile_load("h200", &hw), 0);
	tp_report_info info = { .model = "m&m", .baseline_codec = "bf16", .baseline_ppl = 10,
				.eval_text = "e", .eval_tokens = 100, .ctx = 64, .prompt = 32,
				.decode_steps = 16, .batch = 1, .io_in = 3, .io_out = 1, .hw = &hw,
				.local = &hw, .constraints = &c, .sel = &s };
	char dir[] = "/tmp/tp-report-XXXXXX", md[64], svg[64];
	CHECK(tp_test_mkdtemp(dir));
	snprintf(md, sizeof(md), "%s/r.md", dir);
	snprintf(svg, sizeof(svg), "%s/p.svg", dir);
	CHECK_EQ_INT(tp_report_markdown_write(md, &info, f, 4), 0);
	CHECK_EQ_INT(tp_svg_plot_write(svg, &info, f, 4), 0);
	char *m = slurp(md), *v = slurp(svg);
	CHECK(m && strstr(m, "Serve **a<&>** on **h200**"));
	CHECK(m && strstr(m, "- b: ΔPPL 2.4% > 2%"));
	CHECK(m && strstr(m, "https://huggingface.co/docs/inference-endpoints/pricing"));
	/* Escaped text, one circle per point plus the winner's ring and the
	 * legend's 3, the Pareto front through c (cheaper than bf16 and lower KL
	 * than a) and not through the dominated... none here: b, a, c, bf16. */
	CHECK(v && strstr(v, "a&lt;&amp;&gt; (winner)") && !strstr(v, "a<&>"));
	CHECK(v && strstr(v, "m&amp;m"));
	CHECK_EQ_INT(v ? count(v, "<circle") : 0, 4 + 1 + 3);
	CHECK(v && strstr(v, "<polyline") && strncmp(v, "<?xml", 5) == 0);
	CHECK(v && strstr(v, "</svg>\n") && count(v, "<text") == count(v, "</text>"));
	free(m);
	free(v);
	/* A path that cannot be written. */
	CHECK_EQ_INT(tp_svg_plot_write("/nonexistent/p.svg", &info, f, 4), TP_EIO);
	CHECK_EQ_INT(tp_report_markdown_write("/nonexistent/r.md", &info, f, 4), TP_EIO);
	unlink(md);
	unlink(svg);
	rmdir(dir);
}

/* The bandwidth read: 8 x the last-level cache within [64, 512] MiB. */
static void test_stream_bytes(void)
{
	const size_t mib = (size_t)1 << 20;
	CHECK(tp_hw_stream_bytes(0) == 64 * mib);        /* unknown */
	CHECK(tp_hw_stream_bytes(2 * mib) == 64 * mib);  /* small cache: the floor */
	CHECK(tp_hw_stream_bytes(32 * mib) == 256 * mib);
	CHECK(tp_hw_stream_bytes(480 * mib) == 512 * mib); /* the cap */
	CHECK(tp_hw_stream_bytes(SIZE_MAX / 2) == 512 * mib);
}

/* A request starts with no constraint, batch 1, 3:1 and the CPU. */
static void test_request_init(void)
{
	tp_optimize_request q;
	memset(&q, 0x5a, sizeof(q));
	tp_optimize_request_init(&q);
	CHECK(isnan(q.constraints.max_kl) && isnan(q.constraints.max_ppl_delta_pct));
	CHECK(q.batch == 1 && q.io_in == 3 && q.io_out == 1);
	CHECK(q.device == TP_OPTIMIZE_DEVICE_CPU && !q.model && !q.quick && q.budget_s == 0);
	CHECK(!q.eval.text && !q.calib.text && !q.export_dir && q.max_tokens == 0);
}

int main(void)
{
	TP_TEST_RUN(test_stream_bytes);
	TP_TEST_RUN(test_request_init);
	TP_TEST_RUN(test_profiles);
	TP_TEST_RUN(test_roofline);
	TP_TEST_RUN(test_figures);
	TP_TEST_RUN(test_select);
	TP_TEST_RUN(test_reports);
	return TP_TEST_RESULT();
}
