/* tp_optimize_run on the fixture model: progress callbacks, a failing
 * candidate kept with its error, the winner, the reports, the budget's
 * skips, no winner to export, the CPU fallback, a device backend (a fake
 * GPU) and its fallbacks, and requests refused before anything runs. */
#include "opt_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct seen {
	int baseline, candidates, notes;
	char note[256];
} seen;

static int on_baseline(void *ctx, const tp_optimize_outcome *o)
{
	seen *s = ctx;
	s->baseline++;
	CHECK(o->baseline.ppl > 0);
	return 0;
}

static int on_candidate(void *ctx, const tp_optimize_outcome *o, size_t i)
{
	seen *s = ctx;
	CHECK(i == (size_t)s->candidates && i < o->ncandidates);
	s->candidates++;
	return 0;
}

/* Stops the run after the first candidate. */
static int stop_after_one(void *ctx, const tp_optimize_outcome *o, size_t i)
{
	(void)o;
	*(size_t *)ctx = i + 1;
	return tp_error_set(TP_EINVAL, "stopped");
}

static void on_note(void *ctx, const char *msg)
{
	seen *s = ctx;
	s->notes++;
	snprintf(s->note, sizeof(s->note), "%s", msg);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s = calloc(1, 1 << 20);
	if (f && s)
		(void)!fread(s, 1, (1 << 20) - 1, f);
	if (f)
		fclose(f);
	return s;
}

static void base_request(tp_optimize_request *q, const char *model)
{
	tp_optimize_request_init(q);
	q->model = model;
	q->ctx = 64;
	q->max_tokens = 192;
	q->threads = 2;
}

static void test_run(const char *model, const char *dir)
{
	tp_optimize_request q;
	base_request(&q, model);
	q.candidates = "rtn4_g128,nope";
	q.device = TP_OPTIMIZE_DEVICE_CUDA;
	seen s = { 0 };
	tp_optimize_progress pg = { &s, on_baseline, on_candidate, on_note };
	tp_optimize_outcome *o = NULL;
	int rc = tp_optimize_run(&q, &pg, &o);
	CHECK_EQ_INT(rc, 0);
	if (rc < 0) {
		fprintf(stderr, "run: %s\n", tp_error_last());
		return;
	}
	CHECK(o->device == TP_OPTIMIZE_DEVICE_CPU);
	CHECK(s.notes == 1 && strstr(s.note, "CUDA") && strstr(s.note, "CPU"));
	CHECK(s.baseline == 1 && s.candidates == 2);
	CHECK_STR(o->baseline_codec, "bf16");
	CHECK_STR(o->eval_text, "default:eval.txt");
	CHECK(o->ncandidates == 2 && o->nfailed == 1 && o->nskipped == 0 && o->nfigures == 1);
	CHECK(o->candidates[0].ok && o->candidates[0].fig == 0 && o->candidates[0].r.has_kl);
	CHECK(!o->candidates[1].ok && !o->candidates[1].skipped && o->candidates[1].fig == -1);
	CHECK(strstr(o->candidates[1].error, "nope") != NULL);
	CHECK(o->sel.winner == 0 && o->hw.measured && o->params > 0 && o->ctx == 64);
	CHECK(o->info.nfailed == 1 && o->info.failed[0] && strstr(o->info.failed[0], "nope: "));
	char json[4200], md[4200];
	snprintf(json, sizeof(json), "%s/r.json", dir);
	snprintf(md, sizeof(md), "%s/r.md", dir);
	CHECK_EQ_INT(tp_optimize_outcome_write_json(o, json), 0);
	CHECK_EQ_INT(tp_optimize_outcome_write_markdown(o, md), 0);
	char *j = slurp(json), *m = slurp(md);
	CHECK(j && strstr(j, "\"winner\":\t{\n\t\t\"codec\":\t\"rtn4_g128\""));
	CHECK(j && strstr(j, "\"error\":") && strstr(j, "\"fallbacks\":\t[]"));
	CHECK(m && strstr(m, "Serve **rtn4_g128**"));
	free(j);
	free(m);
	unlink(json);
	unlink(md);
	/* No export asked for: nothing done. */
	const char *name = "x";
	char *written = (char *)"x";
	CHECK_EQ_INT(tp_optimize_outcome_export(o, &name, &written), 0);
	CHECK(!name && !written);
	tp_optimize_outcome_free(o);
}

/* GPU device names to their hardware profiles, whole words only. */
static void test_gpu_profile(void)
{
	const char *cases[][2] = {
		{ "NVIDIA H200", "h200" },	      { "NVIDIA H100 80GB HBM3", "h100" },
		{ "NVIDIA A100-SXM4-80GB", "a100-80gb" }, { "NVIDIA A100-PCIE-40GB", NULL },
		{ "NVIDIA L40S", "l40s" },	      { "NVIDIA L4", "l4" },
		{ "NVIDIA A10G", "a10g" },	      { "Tesla T4", "t4" },
		{ "NVIDIA GeForce RTX 4090", NULL }, { "", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = tp_optimize_gpu_profile(cases[i][0]);
		CHECK(got == cases[i][1] || (got && cases[i][1] && strcmp(got, cases[i][1]) == 0));
	}
}

/* A backend standing in for the GPU: probe names a device (or fails, its
 * reason the note's), measure and reference run the CPU's scoring and
 * count calls; reference declines (TP_EUNSUPPORTED) when told to. */
typedef struct fake_gpu {
	const char *name; /* NULL: no device */
	int probes, measures, references;
	bool decline;
} fake_gpu;

static int fake_probe(void *ctx, char *name, size_t cap)
{
	fake_gpu *f = ctx;
	f->probes++;
	if (!f->name)
		return tp_error_set(TP_EUNSUPPORTED, "no-device-here");
	snprintf(name, cap, "%s", f->name);
	return 0;
}

static int fake_measure(void *ctx, const tp_model *m, const tp_eval_ref *ref, const int32_t *ids,
			size_t n, const tp_eval_opts *eo, size_t prefill, size_t decode,
			tp_eval_result *r, tp_speed_result *sp)
{
	((fake_gpu *)ctx)->measures++;
	bool exact = tp_quant_kernel_exact(true);
	int rc = tp_runtime_eval_perplexity_ref(m, ref, ids, n, eo, r);
	tp_quant_kernel_exact(exact);
	return rc < 0 ? rc : tp_runtime_eval_speed(m, ids, prefill, decode, sp);
}

static int fake_reference(void *ctx, const tp_model *m, tp_eval_ref **ref, const int32_t *ids,
			  size_t n, const tp_eval_opts *eo, tp_eval_result *r)
{
	fake_gpu *f = ctx;
	f->references++;
	if (f->decline)
		return tp_error_set(TP_EUNSUPPORTED, "declined");
	bool exact = tp_quant_kernel_exact(true);
	int rc = tp_runtime_eval_reference(ref, m, ids, n, eo, r);
	tp_quant_kernel_exact(exact);
	return rc;
}

/* One run with the fake backend; *o NULL on failure. */
static void run_fake(const char *model, fake_gpu *f, tp_optimize_device dev, const char *hw,
		     seen *s, tp_optimize_outcome **o)
{
	tp_optimize_request q;
	base_request(&q, model);
	q.candidates = "rtn4_g128";
	q.device = dev;
	q.hardware = hw;
	tp_optimize_backend b = { "fake", f, fake_probe, fake_measure, fake_reference, NULL };
	q.backend = &b;
	tp_optimize_progress pg = { s, NULL, NULL, on_note };
	*o = NULL;
	CHECK_EQ_INT(tp_optimize_run(&q, &pg, o), 0);
}

/* The backend measures every candidate when it finds a GPU with a profile,
 * that profile measured being the default target; otherwise the CPU does,
 * with one note saying why. */
static void test_backend(const char *model, const char *dir)
{
	fake_gpu f = { .name = "NVIDIA H200" };
	seen s = { 0 };
	tp_optimize_outcome *o = NULL, *c = NULL;
	run_fake(model, &f, TP_OPTIMIZE_DEVICE_AUTO, NULL, &s, &o);
	if (!o)
		return;
	/* the baseline's reference on the device too */
	CHECK(f.probes == 1 && f.measures == 1 && f.references == 1 && s.notes == 0 &&
	      !o->device_note[0]);
	CHECK(o->device == TP_OPTIMIZE_DEVICE_CUDA);
	CHECK_STR(o->device_name, "NVIDIA H200");
	CHECK_STR(o->hw.name, "h200");
	CHECK_STR(o->local.name, "h200");
	CHECK(o->hw.measured && o->local.measured && strstr(o->local.description, "NVIDIA H200"));
	CHECK(o->nfigures == 1 && !o->figures[0].projected);
	char json[4200];
	snprintf(json, sizeof(json), "%s/g.json", dir);
	CHECK_EQ_INT(tp_optimize_outcome_write_json(o, json), 0);
	char *j = slurp(json);
	CHECK(j && strstr(j, "\"device\":\t\"cuda\"") &&
	      strstr(j, "\"device_name\":\t\"NVIDIA H200\""));
	free(j);
	unlink(json);
	/* The same quality as the CPU's own run: the fake scores as it does. */
	seen sc = { 0 };
	run_fake(model, &f, TP_OPTIMIZE_DEVICE_CPU, NULL, &sc, &c);
	CHECK(f.probes == 1 && f.measures == 1 && f.references == 1 && sc.notes == 0);
	if (c) {
		CHECK(c->device == TP_OPTIMIZE_DEVICE_CPU && !c->device_name[0]);
		CHECK_STR(c->hw.name, "cpu-local");
		CHECK(c->candidates[0].r.ppl == o->candidates[0].r.ppl);
		CHECK(c->candidates[0].r.kl_mean == o->candidates[0].r.kl_mean);
	}
	/* A device that declines the reference: the CPU computes it, the
	 * same figures. */
	fake_gpu d = { .name = "NVIDIA H200", .decline = true };
	tp_optimize_outcome *dc = NULL;
	seen sd = { 0 };
	run_fake(model, &d, TP_OPTIMIZE_DEVICE_AUTO, NULL, &sd, &dc);
	CHECK(d.references == 1 && d.measures == 1);
	if (dc && c) {
		CHECK(dc->device == TP_OPTIMIZE_DEVICE_CUDA);
		CHECK(dc->baseline.ppl == c->baseline.ppl);
		CHECK(dc->candidates[0].r.kl_mean == c->candidates[0].r.kl_mean);
	}
	tp_optimize_outcome_free(dc);
	tp_optimize_outcome_free(c);
	tp_optimize_outcome_free(o);
	/* Another target: projected from the GPU's measured figures. */
	run_fake(model, &f, TP_OPTIMIZE_DEVICE_CUDA, "t4", &s, &o);
	if (o) {
		CHECK(o->device == TP_OPTIMIZE_DEVICE_CUDA && s.notes == 0);
		CHECK_STR(o->hw.name, "t4");
		CHECK_STR(o->local.name, "h200");
		CHECK(!o->hw.measured && o->figures[0].projected);
	}
	tp_optimize_outcome_free(o);
	/* Fallbacks, each with its reason in one note. */
	struct {
		const char *gpu, *hw, *why;
	} fb[] = { { NULL, NULL, "no CUDA GPU found (no-device-here)" },
		   { "NVIDIA GeForce RTX 4090", NULL, "GPU NVIDIA GeForce RTX 4090 has no hardware" },
		   { "NVIDIA H200", "cpu-local", "--hardware cpu-local" } };
	for (size_t i = 0; i < sizeof(fb) / sizeof(fb[0]); i++) {
		fake_gpu g = { .name = fb[i].gpu };
		seen n = { 0 };
		run_fake(model, &g, TP_OPTIMIZE_DEVICE_CUDA, fb[i].hw, &n, &o);
		CHECK(g.measures == 0 && g.references == 0 && n.notes == 1 && strstr(n.note, fb[i].why) &&
		      strstr(n.note, "measuring on the CPU"));
		CHECK(o && o->device == TP_OPTIMIZE_DEVICE_CPU && o->candidates[0].ok);
		CHECK(o && strcmp(o->device_note, n.note) == 0);
		tp_optimize_outcome_free(o);
	}
}

/* A constraint nothing meets: no winner, so no winner to export. */
static void test_no_winner(const char *model, const char *dir)
{
	tp_optimize_request q;
	base_request(&q, model);
	q.candidates = "rtn4_g128";
	char out[4200];
	snprintf(out, sizeof(out), "%s/export", dir);
	q.export_dir = out;
	CHECK_EQ_INT(tp_select_constraint_set(&q.constraints, "--max-kl", "0"), 0);
	tp_optimize_outcome *o = NULL;
	CHECK_EQ_INT(tp_optimize_run(&q, NULL, &o), 0);
	if (!o)
		return;
	CHECK(o->sel.winner < 0 && o->nfigures == 1 && !o->figures[0].passed);
	CHECK_STR(o->sel.binding_flag, "--max-kl");
	const char *name = NULL;
	char *written = NULL;
	CHECK_EQ_INT(tp_optimize_outcome_export(o, &name, &written), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "no winner") != NULL && !written);
	CHECK(access(out, F_OK) != 0);
	tp_optimize_outcome_free(o);
}

/* A budget nothing fits in: every candidate skipped, with its reason. */
static void test_budget(const char *model)
{
	tp_optimize_request q;
	base_request(&q, model);
	q.candidates = "rtn4_g128,q8_0";
	q.budget_s = 1e-6;
	tp_optimize_outcome *o = NULL;
	CHECK_EQ_INT(tp_optimize_run(&q, NULL, &o), 0);
	if (!o)
		return;
	CHECK(o->nskipped == 2 && o->nfigures == 0 && o->sel.winner < 0);
	CHECK(o->candidates[0].skipped && strstr(o->candidates[0].error, "budget"));
	CHECK(o->info.nskipped == 2 && o->info.budget_s == 1e-6);
	tp_optimize_outcome_free(o);
}

/* Refused before anything runs, or stopped by a progress callback; *out
 * untouched. */
static void test_refused(const char *model)
{
	tp_optimize_request q;
	tp_optimize_outcome *o = (tp_optimize_outcome *)&q; /* must stay */
	base_request(&q, model);
	q.hardware = "no-such-gpu";
	CHECK_EQ_INT(tp_optimize_run(&q, NULL, &o), TP_ENOTFOUND);
	base_request(&q, model);
	q.eval = (tp_optimize_text){ "a.txt", "the same words", 14 };
	q.calib = (tp_optimize_text){ "b.txt", "the same words", 14 };
	CHECK_EQ_INT(tp_optimize_run(&q, NULL, &o), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "b.txt is the evaluation text a.txt") != NULL);
	base_request(&q, model);
	q.candidates = "nf4";
	q.export_dir = "unused";
	CHECK(tp_optimize_run(&q, NULL, &o) < 0);
	CHECK(strstr(tp_error_last(), "cannot be exported") != NULL);
	CHECK(o == (tp_optimize_outcome *)&q);
	tp_optimize_outcome_free(NULL);
	/* A progress callback that says stop. */
	base_request(&q, model);
	q.candidates = "rtn4_g128,q8_0";
	size_t calls = 0;
	tp_optimize_progress pg = { &calls, NULL, stop_after_one, NULL };
	CHECK_EQ_INT(tp_optimize_run(&q, &pg, &o), TP_EINVAL);
	CHECK(calls == 1 && o == (tp_optimize_outcome *)&q);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test_optimize_run DATA_DIR\n");
		return 2;
	}
	char dir[] = "/tmp/tp-test-run-XXXXXX", model[64], src[4096], dst[128];
	if (!tp_test_mkdtemp(dir))
		return 1;
	snprintf(model, sizeof(model), "%s/model", dir);
	const char *files[][2] = { { "eval/config.json", "config.json" },
				   { "eval/tokenizer.json", "tokenizer.json" },
				   { "fixtures/base-bf16.safetensors", "model.safetensors" } };
	bool ok = mkdir(model, 0755) == 0;
	for (size_t i = 0; ok && i < 3; i++) {
		snprintf(src, sizeof(src), "%s/%s", argv[1], files[i][0]);
		snprintf(dst, sizeof(dst), "%s/%s", model, files[i][1]);
		char *abs = realpath(src, NULL);
		ok = abs && symlink(abs, dst) == 0;
		free(abs);
	}
	CHECK(ok);
	if (ok) {
		fprintf(stderr, "-- test_run\n");
		test_run(model, dir);
		fprintf(stderr, "-- test_gpu_profile\n");
		test_gpu_profile();
		fprintf(stderr, "-- test_backend\n");
		test_backend(model, dir);
		fprintf(stderr, "-- test_no_winner\n");
		test_no_winner(model, dir);
		fprintf(stderr, "-- test_budget\n");
		test_budget(model);
		fprintf(stderr, "-- test_refused\n");
		test_refused(model);
	}
	tp_test_rmtree(dir);
	return TP_TEST_RESULT();
}
