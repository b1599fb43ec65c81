/* The optimizer run behind `tenpak optimize` (tp_optimize_run): baseline,
 * candidates measured within the budget, hardware figures, the selection,
 * and the export of the outcome. */
#include "tp_optimize.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define QUICK_TOKENS 1024 /* quick: eval and calibration tokens */
#define QUICK_BUDGET 120  /* quick: default budget, seconds */

/* optimize/data, compiled in by optimize/embed_texts.cmake. */
extern const unsigned char tp_optimize_text_calib[], tp_optimize_text_eval[];
extern const size_t tp_optimize_text_calib_len, tp_optimize_text_eval_len;

/* What the export needs after the run: the calibration methods quantize
 * with again, and how the model was loaded. */
struct tp_optimize_kept {
	tp_model_opts mo;
	tp_quant_calib_set calib;
	int32_t *cal_ids;
	size_t ncal;
	tp_calib_opts co;
	char *export_dir, *export_candidate;
	char **notes; /* "name: why": skipped, then failed */
	const tp_optimize_backend *gpu; /* measuring candidates; NULL: the CPU */
};

void tp_optimize_request_init(tp_optimize_request *req)
{
	*req = (tp_optimize_request){ .constraints = tp_select_constraints_none(),
				      .batch = 1,
				      .io_in = 3,
				      .io_out = 1,
				      .device = TP_OPTIMIZE_DEVICE_CPU };
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int dup_str(char **out, const char *s)
{
	*out = NULL;
	if (s && !(*out = strdup(s)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	return 0;
}

const char *tp_optimize_gpu_profile(const char *device_name)
{
	static const char *const direct[] = { "h200", "h100", "l40s", "a10g", "l4", "t4", NULL };
	char low[256], *save = NULL;
	size_t i = 0;
	bool gb80 = false, a100 = false;
	for (; device_name && device_name[i] && i + 1 < sizeof(low); i++)
		low[i] = (char)tolower((unsigned char)device_name[i]);
	low[i] = 0;
	/* Whole words: "NVIDIA L40S" is not an L4, "NVIDIA A100-SXM4-80GB" is. */
	for (char *w = strtok_r(low, " -_", &save); w; w = strtok_r(NULL, " -_", &save)) {
		for (size_t k = 0; direct[k]; k++)
			if (strcmp(w, direct[k]) == 0)
				return direct[k];
		a100 |= strcmp(w, "a100") == 0;
		gb80 |= strcmp(w, "80gb") == 0;
	}
	return a100 && gb80 ? "a100-80gb" : NULL;
}

/* Where candidates are measured: the backend's GPU when asked for (CUDA,
 * or AUTO) and usable, else the CPU, saying why in one note. A request
 * for CUDA without a GPU falls back too (issue 14): the run still answers,
 * with the CPU's figures projected by roofline. */
static void device_choose(const tp_optimize_request *req, const tp_optimize_progress *pg,
			  tp_optimize_outcome *o)
{
	char msg[512], name[sizeof(o->device_name)] = "";
	const tp_optimize_backend *b = req->backend;
	o->device = TP_OPTIMIZE_DEVICE_CPU;
	if (req->device == TP_OPTIMIZE_DEVICE_CPU)
		return;
	const char *profile = NULL;
	if (!b)
		snprintf(msg, sizeof(msg), "CUDA not built into this tenpak");
	else if (b->probe(b->ctx, name, sizeof(name)) < 0)
		snprintf(msg, sizeof(msg), "no CUDA GPU found (%s)", tp_error_last());
	else if (req->hardware && strcasecmp(req->hardware, "cpu-local") == 0)
		snprintf(msg, sizeof(msg), "--hardware cpu-local asks for this machine's CPU");
	else if (!(profile = tp_optimize_gpu_profile(name)))
		snprintf(msg, sizeof(msg), "GPU %s has no hardware profile (t4, l4, a10g, l40s, "
			 "a100-80gb, h100, h200) to price it", name);
	if (profile) {
		o->device = TP_OPTIMIZE_DEVICE_CUDA;
		o->kept->gpu = b;
		snprintf(o->device_name, sizeof(o->device_name), "%s", name);
		return;
	}
	snprintf(o->device_note, sizeof(o->device_note), "%s: measuring on the CPU (other "
		 "targets projected by roofline)", msg);
	if (pg && pg->note)
		pg->note(pg->ctx, o->device_note);
}

/* Split the comma list (or every format's name) into the candidates. */
static int list_candidates(const char *list, tp_optimize_candidate *oc, size_t *n)
{
	*n = 0;
	if (!list) {
		const tp_quant_format *const *f = tp_quant_formats();
		for (size_t i = 0; f[i] && *n < TP_OPTIMIZE_CANDIDATES_MAX; i++)
			if (!(oc[(*n)++].name = strdup(f[i]->name)))
				return tp_error_set(TP_ENOMEM, "out of memory");
		return 0;
	}
	for (const char *s = list; *s;) {
		size_t len = strcspn(s, ",");
		if (*n == TP_OPTIMIZE_CANDIDATES_MAX)
			return tp_error_set(TP_EINVAL, "more than %d candidates",
					    TP_OPTIMIZE_CANDIDATES_MAX);
		if (len && !(oc[(*n)++].name = strndup(s, len)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		s += len + (s[len] == ',');
	}
	return *n ? 0 : tp_error_set(TP_EINVAL, "no candidate in '%s'", list);
}

/* The export, checked before the long run: the named candidate can be
 * exported, or (the winner's export) at least one of the candidates. */
static int export_check(const tp_optimize_request *req, const tp_optimize_candidate *oc, size_t n)
{
	tp_export_plan plan;
	if (!req->export_dir)
		return 0;
	if (req->export_candidate)
		return tp_optimize_export_plan(req->export_candidate, &plan);
	int rc = 0;
	for (size_t i = 0; i < n; i++)
		if ((rc = tp_optimize_export_plan(oc[i].name, &plan)) == 0)
			return 0;
	return n == 1 ? rc : tp_error_wrap(rc, "--export: none of the candidates");
}

/* The --compare profiles. */
static int load_compare(const char *list, tp_optimize_outcome *o)
{
	int rc;
	for (const char *s = list; s && *s;) {
		size_t len = strcspn(s, ",");
		char name[256];
		snprintf(name, sizeof(name), "%.*s", (int)(len < 255 ? len : 255), s);
		if (o->ncompare == TP_OPTIMIZE_COMPARE_MAX)
			return tp_error_set(TP_EINVAL, "--compare: more than %d profiles",
					    TP_OPTIMIZE_COMPARE_MAX);
		if (len && (rc = tp_hw_profile_load(name, &o->compare[o->ncompare++])) < 0)
			return rc;
		s += len + (s[len] == ',');
	}
	return 0;
}

/* Tokenize the caller's text, or the built-in one. */
static int tokenize(const tp_tokenizer *tok, const tp_optimize_text *t, const unsigned char *dflt,
		    size_t dflt_len, const char *dflt_label, char **label, int32_t **ids, size_t *n)
{
	int rc = dup_str(label, t->text ? (t->label ? t->label : "(text)") : dflt_label);
	if (rc < 0)
		return rc;
	const char *s = t->text ? t->text : (const char *)dflt;
	return tp_tokenizer_encode(tok, s, t->text ? t->len : dflt_len, false, ids, n);
}

/* The speed run fits in the eval text and in ctx positions: a prefill,
 * then single-token decode steps. */
static void plan_speed(tp_optimize_outcome *o, bool quick, size_t ntok)
{
	size_t ctx = o->ctx, prefill = ctx / 2 < 256 ? ctx / 2 : 256, decode = quick ? 16 : 64;
	if (decode > ctx - prefill)
		decode = ctx - prefill;
	if (prefill + decode > ntok) {
		prefill = ntok / 2;
		decode = ntok - prefill;
	}
	o->prefill = prefill;
	o->decode_steps = decode;
}

/* Seconds candidate i is expected to take: the slowest of its kind (method
 * or format) so far, else a guess from the baseline's evaluation (methods
 * calibrate again block by block: 4 times a format's guess). */
static double estimate_s(const tp_optimize_outcome *o, size_t i, double base_s)
{
	bool method = tp_optimize_is_method(o->candidates[i].name);
	double est = 0;
	for (size_t k = 0; k < i; k++) {
		const tp_optimize_candidate *c = &o->candidates[k];
		if (c->ok && tp_optimize_is_method(c->name) == method && c->seconds > est)
			est = c->seconds;
	}
	if (est > 0)
		return est;
	return (method ? 4.0 : 1.0) * 2.0 * base_s;
}

/* "name: why" for the reports (NULL when out of memory: left out). */
static char *note(const tp_optimize_candidate *c)
{
	size_t len = strlen(c->name) + strlen(c->error) + 3;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%s: %s", c->name, c->error);
	return s;
}

static int run_candidate(const tp_optimize_outcome *o, const tp_eval_ref *base,
			 const int32_t *ev, size_t nev, const tp_eval_opts *eo,
			 const tp_candidate_calib *cc, tp_optimize_candidate *c)
{
	tp_model *m = NULL;
	int rc = tp_optimize_candidate_load(&m, o->model, &o->kept->mo, c->name, cc,
					    o->source_bits, &c->st);
	/* Quality is the format's (fp32 activations, as PyTorch fake-quant),
	 * speed the serving kernels' (8-bit activations where llama.cpp uses
	 * them). */
	const tp_optimize_backend *gpu = o->kept->gpu;
	if (rc == 0 && gpu) {
		rc = gpu->measure(gpu->ctx, m, base, ev, nev, eo, o->prefill, o->decode_steps,
				  &c->r, &c->sp);
		goto done;
	}
	bool exact = tp_quant_kernel_exact(true);
	if (rc == 0)
		rc = tp_runtime_eval_perplexity_ref(m, base, ev, nev, eo, &c->r);
	tp_quant_kernel_exact(exact);
	if (rc == 0)
		rc = tp_runtime_eval_speed(m, ev, o->prefill, o->decode_steps, &c->sp);
done:
	tp_model_free(m);
	if (rc < 0)
		snprintf(c->error, sizeof(c->error), "%s", tp_error_last());
	c->ok = rc == 0;
	return rc;
}

/* The baseline's reference log-probs: on the device measuring the
 * candidates when it can compute them (the GPU's forward pass, as theirs),
 * else on the CPU with fp32 activations. */
static int reference(const tp_optimize_backend *gpu, const tp_model *m, tp_eval_ref **ref,
		     const int32_t *ev, size_t nev, const tp_eval_opts *eo, tp_eval_result *r)
{
	if (gpu && gpu->reference) {
		int rc = gpu->reference(gpu->ctx, m, ref, ev, nev, eo, r);
		if (rc != TP_EUNSUPPORTED)
			return rc;
	}
	bool exact = tp_quant_kernel_exact(true);
	int rc = tp_runtime_eval_reference(ref, m, ev, nev, eo, r);
	tp_quant_kernel_exact(exact);
	return rc;
}

static tp_figures_in figures_in(const tp_optimize_outcome *o, const tp_optimize_candidate *c,
				const tp_hw_profile *target)
{
	return (tp_figures_in){ c->name, &c->st, &c->r, o->baseline.ppl, &c->sp, &o->config,
				o->params, o->source_bits, o->ctx, o->batch, o->io_in, o->io_out,
				target, &o->local };
}

void tp_optimize_outcome_figures(const tp_optimize_outcome *o, size_t i,
				 const tp_hw_profile *target, tp_candidate_figures *out)
{
	tp_figures_in fi = figures_in(o, &o->candidates[i], target);
	tp_figures_compute(&fi, out);
}

/* On the GPU, "this machine" is the GPU's profile (its datasheet's
 * bandwidth and peak for the rooflines), measured; so is the target when
 * --hardware is not given or names the same profile. */
static int gpu_local(const tp_optimize_request *req, tp_optimize_outcome *o)
{
	int rc = tp_hw_profile_load(tp_optimize_gpu_profile(o->device_name), &o->local);
	if (rc < 0)
		return rc;
	o->local.measured = true;
	snprintf(o->local.description, sizeof(o->local.description), "this machine: %.100s, measured",
		 o->device_name);
	if (!req->hardware || strcasecmp(o->hw.name, o->local.name) == 0)
		o->hw.measured = true;
	return 0;
}

/* The target, this machine measured (rooflines only when something is
 * projected: the bandwidth read costs memory and time) and --compare.
 * Called before any model is loaded, so that the bandwidth read's buffer
 * (up to 512 MiB) is freed before the models' memory is counted, not added
 * to it; on its own pool of the run's thread count. */
static int hardware(const tp_optimize_request *req, tp_optimize_outcome *o)
{
	if (req->usd_per_hour > 0)
		o->hw.usd_per_hour = req->usd_per_hour;
	bool project = !o->hw.measured || o->batch != 1 || o->ncompare > 0;
	int rc;
	if (o->device == TP_OPTIMIZE_DEVICE_CUDA) {
		rc = gpu_local(req, o);
	} else {
		tp_pool *pool = NULL;
		rc = tp_pool_new(&pool, req->threads);
		if (rc == 0)
			rc = tp_hw_measure_local(&o->local, pool, project);
		tp_pool_free(pool);
	}
	if (rc < 0)
		return rc;
	for (size_t k = 0; k < o->ncompare; k++)
		if (o->compare[k].measured)
			o->compare[k] = o->local;
	if (o->hw.measured) {
		double usd = o->hw.usd_per_hour;
		o->hw = o->local;
		if (req->usd_per_hour > 0)
			o->hw.usd_per_hour = usd;
	}
	snprintf(o->measured_on, sizeof(o->measured_on), "%s (%s)", o->local.name,
		 o->local.description);
	return 0;
}

/* Measure every candidate in turn; a failure is kept with its error. */
static int measure(const tp_optimize_progress *pg, tp_optimize_outcome *o, const tp_eval_ref *ref,
		   const int32_t *ev, size_t nev, const tp_eval_opts *eo, double t_start,
		   double t_base)
{
	int rc;
	tp_optimize_kept *k = o->kept;
	tp_candidate_calib cc = { &k->calib, k->cal_ids, k->ncal, k->co };
	for (size_t i = 0; i < o->ncandidates; i++) {
		tp_optimize_candidate *c = &o->candidates[i];
		double left = o->info.budget_s - (now_s() - t_start);
		double est = estimate_s(o, i, t_base);
		if (o->info.budget_s > 0 && est > left) {
			c->skipped = true;
			snprintf(c->error, sizeof(c->error),
				 "estimated %.1f s, %.1f s left of the %.0f s budget", est,
				 left > 0 ? left : 0, o->info.budget_s);
			k->notes[o->nskipped++] = note(c);
		} else {
			double t0 = now_s();
			if (run_candidate(o, ref, ev, nev, eo, &cc, c) < 0)
				o->nfailed++;
			c->seconds = now_s() - t0;
		}
		if (pg && pg->candidate && (rc = pg->candidate(pg->ctx, o, i)) != 0)
			return rc;
	}
	return 0;
}

/* Figures of every measured candidate, then the selection. */
static void select_winner(tp_optimize_outcome *o)
{
	for (size_t i = 0; i < o->ncandidates; i++) {
		if (!o->candidates[i].ok)
			continue;
		tp_optimize_outcome_figures(o, i, &o->hw, &o->figures[o->nfigures]);
		o->candidates[i].fig = (long)o->nfigures++;
	}
	o->constraints.hw_memory_gb = o->hw.memory_gb;
	tp_select_run(o->figures, o->nfigures, &o->constraints, &o->sel);
	size_t nfail = 0;
	for (size_t i = 0; i < o->ncandidates; i++)
		if (!o->candidates[i].ok && !o->candidates[i].skipped)
			o->kept->notes[TP_OPTIMIZE_CANDIDATES_MAX + nfail++] = note(&o->candidates[i]);
}

static int outcome_new(tp_optimize_outcome **out, const tp_optimize_request *req)
{
	tp_optimize_outcome *o = calloc(1, sizeof(*o));
	int rc;
	if (!o)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*out = o;
	o->sel.winner = -1;
	o->constraints = req->constraints;
	o->ctx = req->ctx;
	o->batch = req->batch ? req->batch : 1;
	o->io_in = req->io_in > 0 ? req->io_in : 3;
	o->io_out = req->io_out > 0 ? req->io_out : 1;
	if (!(o->kept = calloc(1, sizeof(*o->kept))) ||
	    !(o->candidates = calloc(TP_OPTIMIZE_CANDIDATES_MAX, sizeof(*o->candidates))) ||
	    !(o->figures = calloc(TP_OPTIMIZE_CANDIDATES_MAX, sizeof(*o->figures))) ||
	    !(o->kept->notes = calloc(2 * TP_OPTIMIZE_CANDIDATES_MAX, sizeof(char *))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	o->kept->mo.threads = req->threads;
	if ((rc = dup_str(&o->model, req->model)) < 0 ||
	    (rc = dup_str(&o->kept->export_dir, req->export_dir)) < 0 ||
	    (rc = dup_str(&o->kept->export_candidate, req->export_candidate)) < 0)
		return rc;
	for (size_t i = 0; i < TP_OPTIMIZE_CANDIDATES_MAX; i++)
		o->candidates[i].fig = -1;
	return 0;
}

/* What the reports show, pointing into o. */
static void report_info(tp_optimize_outcome *o, const tp_optimize_request *req, double budget_s)
{
	o->info = (tp_report_info){ .model = o->model, .baseline_codec = o->baseline_codec,
				    .baseline_ppl = o->baseline.ppl, .eval_text = o->eval_text,
				    .eval_tokens = o->baseline.tokens, .ctx = o->ctx,
				    .prompt = o->prefill, .decode_steps = o->decode_steps,
				    .batch = o->batch, .io_in = o->io_in, .io_out = o->io_out,
				    .quick = req->quick, .budget_s = budget_s, .hw = &o->hw,
				    .local = &o->local, .constraints = &o->constraints,
				    .sel = &o->sel,
				    .skipped = (const char *const *)o->kept->notes,
				    .failed = (const char *const *)o->kept->notes +
					      TP_OPTIMIZE_CANDIDATES_MAX };
}

int tp_optimize_run(const tp_optimize_request *req, const tp_optimize_progress *pg,
		    tp_optimize_outcome **out)
{
	double t_start = now_s();
	tp_optimize_outcome *o = NULL;
	tp_model *m = NULL;
	tp_tokenizer *tok = NULL;
	tp_eval_ref *ref = NULL;
	char *tok_path = NULL;
	int32_t *ev = NULL;
	size_t nev = 0;
	int rc = outcome_new(&o, req);
	if (rc < 0)
		goto done;
	tp_optimize_kept *k = o->kept;
	device_choose(req, pg, o);
	const char *target = req->hardware ? req->hardware
			     : o->device == TP_OPTIMIZE_DEVICE_CUDA ? tp_optimize_gpu_profile(o->device_name)
								     : "cpu-local";
	if ((rc = list_candidates(req->candidates, o->candidates, &o->ncandidates)) < 0 ||
	    (rc = export_check(req, o->candidates, o->ncandidates)) < 0 ||
	    (rc = tp_hw_profile_load(target, &o->hw)) < 0 ||
	    (rc = tp_hw_profile_load("cpu-local", &o->local)) < 0 ||
	    (rc = tp_optimize_source_dtype(o->model, NULL, &o->baseline_codec, &o->source_bits)) < 0 ||
	    (rc = load_compare(req->compare, o)) < 0 || (rc = hardware(req, o)) < 0 ||
	    (rc = tp_optimize_baseline_load(&m, o->model, &k->mo)) < 0 ||
	    (rc = tp_path_join(&tok_path, o->model, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(&tok, tok_path)) < 0 ||
	    (rc = tokenize(tok, &req->eval, tp_optimize_text_eval, tp_optimize_text_eval_len,
			   "default:eval.txt", &o->eval_text, &ev, &nev)) < 0 ||
	    (rc = tokenize(tok, &req->calib, tp_optimize_text_calib, tp_optimize_text_calib_len,
			   "default:calib.txt", &o->calib_text, &k->cal_ids, &k->ncal)) < 0)
		goto done;
	if (nev == k->ncal && memcmp(ev, k->cal_ids, nev * sizeof(*ev)) == 0) {
		rc = tp_error_set(TP_EINVAL, "the calibration text %s is the evaluation text %s",
				  o->calib_text, o->eval_text);
		goto done;
	}
	/* Kept: the baseline is freed once scored and calibrated. */
	o->config = *tp_model_get_config(m);
	o->params = tp_model_params(m);
	if (!o->ctx)
		o->ctx = o->config.max_positions && o->config.max_positions < 512 ?
				 o->config.max_positions : 512;
	size_t max_tokens = req->max_tokens ? req->max_tokens : req->quick ? QUICK_TOKENS : 0;
	int32_t bos = tp_runtime_choose_bos(&o->config, tok);
	tp_eval_opts eo = { .mode = TP_PPL_MODE_LLAMACPP, .ctx = o->ctx, .max_tokens = max_tokens,
			    .bos = bos };
	k->co = (tp_calib_opts){ .ctx = o->ctx, .max_tokens = max_tokens, .bos = bos };
	if (k->gpu)
		k->co.device = k->gpu->calib;
	double t_base = now_s();
	if ((rc = reference(k->gpu, m, &ref, ev, nev, &eo, &o->baseline)) < 0)
		goto done;
	t_base = now_s() - t_base;
	if ((rc = tp_optimize_calibrate(m, k->cal_ids, k->ncal, &k->co, &k->calib)) < 0)
		goto done;
	o->calib_tokens = k->calib.tokens;
	/* Its log-probs and statistics are all candidates need of the baseline:
	 * one model in memory at a time. */
	tp_model_free(m);
	m = NULL;
	plan_speed(o, req->quick, nev);
	report_info(o, req, req->budget_s > 0 ? req->budget_s : req->quick ? QUICK_BUDGET : 0);
	if ((pg && pg->baseline && (rc = pg->baseline(pg->ctx, o)) != 0) ||
	    (rc = measure(pg, o, ref, ev, nev, &eo, t_start, t_base)) != 0)
		goto done;
	select_winner(o);
	o->info.nskipped = o->nskipped;
	o->info.nfailed = o->nfailed;
	o->info.elapsed_s = now_s() - t_start;
done:
	tp_runtime_eval_ref_free(ref);
	free(ev);
	tp_tokenizer_free(tok);
	free(tok_path);
	tp_model_free(m);
	if (rc != 0) {
		tp_optimize_outcome_free(o);
		return rc;
	}
	*out = o;
	return 0;
}

void tp_optimize_outcome_free(tp_optimize_outcome *o)
{
	if (!o)
		return;
	for (size_t i = 0; o->candidates && i < o->ncandidates; i++)
		free(o->candidates[i].name);
	if (o->kept) {
		for (size_t i = 0; o->kept->notes && i < 2 * TP_OPTIMIZE_CANDIDATES_MAX; i++)
			free(o->kept->notes[i]);
		free(o->kept->notes);
		tp_quant_calib_set_free(&o->kept->calib);
		free(o->kept->cal_ids);
		free(o->kept->export_dir);
		free(o->kept->export_candidate);
		free(o->kept);
	}
	free(o->candidates);
	free(o->figures);
	free(o->eval_text);
	free(o->calib_text);
	free(o->model);
	free(o);
}

/* Load candidate name with packed layers (a format: RTN into that format;
 * a method: tp_optimize_candidate_load) and write it into dir
 * (optimize/README.md, "Export"). */
int tp_optimize_outcome_export(const tp_optimize_outcome *o, const char **name, char **written)
{
	const tp_optimize_kept *k = o->kept;
	tp_export_plan plan;
	tp_model *m = NULL;
	tp_candidate_stats st;
	*name = NULL;
	*written = NULL;
	if (!k->export_dir)
		return 0;
	const char *nm = k->export_candidate;
	if (!nm && o->sel.winner >= 0)
		nm = o->figures[o->sel.winner].codec;
	if (!nm)
		return tp_error_set(TP_EINVAL, "--export: no candidate meets the constraints, so "
				    "there is no winner to export (--export-candidate NAME)");
	int rc = tp_optimize_export_plan(nm, &plan);
	if (rc < 0)
		return rc;
	if (tp_optimize_is_method(nm)) {
		tp_candidate_calib cc = { &k->calib, k->cal_ids, k->ncal, k->co };
		rc = tp_optimize_candidate_load(&m, o->model, &k->mo, nm, &cc, o->source_bits, &st);
	} else {
		tp_optimize_packed_ctx pc = { .format = plan.format };
		tp_model_opts po = k->mo;
		po.make_linear = tp_optimize_make_linear_packed;
		po.make_linear_ctx = &pc;
		rc = tp_model_load(&m, o->model, &po);
	}
	char *w = NULL;
	if (rc == 0 && (rc = tp_optimize_export(m, o->model, k->mo.weights, nm, k->export_dir,
					       &w)) == 0) {
		*name = nm;
		*written = w;
	}
	tp_model_free(m);
	return rc;
}
