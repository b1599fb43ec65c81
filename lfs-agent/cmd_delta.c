/* `tenpak delta`: compress, apply, estimate and inspect tensor deltas, and
 * sparsify (a lossy sparse update of a fine-tune on its base). */
#include "cli.h"
#include "tp_common.h"
#include "tp_delta.h"
#include "tp_optimize.h"

#include <cjson/cJSON.h>
#include <math.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Progress is shown for inputs at least this large, on a terminal only. */
#define PROGRESS_MIN (64ull << 20)
#define MAX_BASES 4096

static const char usage_compress[] =
	"usage: tenpak delta compress [--base FILE]... TARGET -o OUT [--threads N] [--level N]\n"
	"Write a delta that rebuilds TARGET from the bases (none: compress TARGET alone).\n"
	"A --base ending in .index.json stands for all of its shards.\n"
	"OUT may be - (stdout), a FIFO or a device: those are written in place.\n"
	"--threads N: CPUs to keep busy (default: the cores this process may use).\n";
static const char usage_apply[] =
	"usage: tenpak delta apply [--base FILE]... DELTA -o OUT [--threads N]\n"
	"Rebuild the file from DELTA and its bases; OUT is written only if its sha256 matches.\n"
	"OUT may be - (stdout), a FIFO or a device: those are written as the bytes come,\n"
	"and a sha256 mismatch then shows only in the exit status.\n"
	"--threads N: CPUs to keep busy (default: the cores this process may use); with 2,\n"
	"one decodes while the other hashes and writes.\n";
static const char usage_estimate[] =
	"usage: tenpak delta estimate [--base FILE]... TARGET [--json] [--threads N] [--level N]\n"
	"Predict the delta size from a sample of each tensor's chunks.\n";
static const char usage_inspect[] =
	"usage: tenpak delta inspect DELTA [--json]\n"
	"Show a delta's manifest: bases, tensors, transforms and sizes.\n";
static const char usage_sparsify[] =
	"usage: tenpak delta sparsify --base BASE_DIR FT_DIR -o OUT_DIR\n"
	"           [--density D | --max-ppl-delta PCT | --max-kl X] [--bits 2..8]\n"
	"           [--select magnitude|activation|dare] [--eval TEXT] [--calib TEXT]\n"
	"           [--ctx N] [--max-tokens N] [--seed N] [--threads N] [--no-eval]\n"
	"           [--no-estimate] [--json FILE]\n"
	"LOSSY: write a model that is NOT the fine-tune, but close to it and cheap to\n"
	"store next to its base. For every tensor, delta = FT - BASE (fp32); a fraction\n"
	"of its entries is kept, quantized to --bits with one scale per row, and\n"
	"OUT = BASE + Q(delta) is written in the fine-tune's dtype, sharding and header.\n"
	"Tensors equal to the base, 1-D tensors (norms, biases), tensors whose shape or\n"
	"dtype differ from the base (resized embeddings) and tensors without a base are\n"
	"copied from FT byte for byte. FT_DIR's config, tokenizer and other small files\n"
	"are copied; its model card gets base_model and the recipe with the measured\n"
	"quality in its front matter.\n"
	"\n"
	"  --density D        fraction of each tensor's entries kept, in (0, 1] (default\n"
	"                     0.1; 0.1 = 10%; a trailing % is accepted: 10%)\n"
	"  --max-ppl-delta P  instead of a density: the smallest density whose perplexity\n"
	"                     is within P % of FT's on the eval text, either way (bisection\n"
	"                     on log density in [0.001, 1]; each step is printed on stderr)\n"
	"  --max-kl X         the same for the mean KL(FT || OUT) in nats per token\n"
	"  --bits B           bits of each kept value, 2..8 (default 8)\n"
	"  --select RULE      which entries are kept: dare (the default: random, kept\n"
	"                     entries scaled by 1/density; on the fixture full fine-tune\n"
	"                     at 10% it kept KL to FT 12x lower than magnitude), magnitude\n"
	"                     (largest |delta|) or activation (largest |delta|*||x||,\n"
	"                     input norms from FT on --calib; magnitude for tensors\n"
	"                     without them: embeddings, lm_head)\n"
	"  --eval FILE        text to measure OUT and BASE against FT (default: the\n"
	"                     built-in evaluation text); --no-eval skips the measurement\n"
	"  --calib FILE       calibration text for activation (default: built-in)\n"
	"  --ctx N            evaluation window in tokens (default 512)\n"
	"  --max-tokens N     use only the first N tokens of the eval text\n"
	"  --seed N           dare's random seed (default 1)\n"
	"  --no-estimate      skip the estimate of what tenpak stores for OUT vs BASE\n"
	"  --json FILE        also write the results as JSON to FILE (- for stdout)\n"
	"Prints the density, the kept entries, the bits per changed weight that tenpak's\n"
	"delta codec is estimated to store for OUT against BASE, and perplexity and KL\n"
	"of OUT (and of BASE, for reference) against FT.\n"
	"Exit status: 0 done; 1 failed (OUT_DIR may hold part of the output); 2 usage;\n"
	"3 the quality budget is not met even at density 1 (OUT is written at density 1).\n";
static const char usage_delta[] =
	"usage: tenpak delta <compress|apply|estimate|inspect> [options]\n"
	"       tenpak delta sparsify --base BASE_DIR FT_DIR -o OUT_DIR [options] (LOSSY)\n"
	"Run 'tenpak delta <command> --help' for the options of each.\n";

typedef struct args {
	const char *bases[MAX_BASES];
	size_t nbases;
	const char *input, *out;
	bool json;
	tp_delta_opts opts;
} args;

static int parse_xform(const char *s, tp_delta_xform *out)
{
	static const tp_delta_xform all[] = { TP_DELTA_XFORM_AUTO, TP_DELTA_XFORM_XOR,
					      TP_DELTA_XFORM_ULP };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(s, tp_delta_xform_name(all[i])) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return -1;
}

/* The numbers and names among the options into a->opts. */
static int parse_values(const char *cmd, const char *threads, const char *level,
			const char *chunk, const char *xform, args *a)
{
	uint64_t n;
	if (threads) {
		if (tp_parse_u64(threads, 0, 1024, &n) < 0)
			return tp_cli_usage_error(cmd, "bad --threads '%s'", threads);
		a->opts.threads = (unsigned)n;
	}
	if (level) {
		if (tp_parse_u64(level, 1, 22, &n) < 0)
			return tp_cli_usage_error(cmd, "--level must be 1..22, got '%s'", level);
		a->opts.level = (int)n;
	}
	if (chunk) { /* for experiments */
		if (tp_parse_size(chunk, 0, TP_DELTA_CHUNK_MAX, &n) < 0)
			return tp_cli_usage_error(cmd, "bad --chunk-size '%s'", chunk);
		a->opts.chunk_size = (size_t)n;
	}
	if (xform && parse_xform(xform, &a->opts.force_xform) < 0) /* for experiments */
		return tp_cli_usage_error(cmd, "--transform must be auto, xor or ulp, got '%s'",
					  xform);
	return TP_CLI_PARSED;
}

/* Every subcommand takes the same options; each checks which it needs.
 * Returns TP_CLI_PARSED, TP_CLI_HELP or TP_EXIT_USAGE (message printed). */
static int parse_args(const char *cmd, int argc, char **argv, args *a)
{
	const char *threads = NULL, *level = NULL, *chunk = NULL, *xform = NULL;
	memset(a, 0, sizeof(*a));
	const tp_cli_opt opts[] = {
		{ "-o", NULL, &a->out },
		{ "--output", NULL, &a->out },
		{ "--json", &a->json, NULL },
		{ "--threads", NULL, &threads },
		{ "--level", NULL, &level },
		{ "--chunk-size", NULL, &chunk },
		{ "--transform", NULL, &xform },
		{ 0 },
	};
	tp_cli_list lists[] = { { "--base", a->bases, MAX_BASES, 0 }, { 0 } };
	int npos = 0, rc = tp_cli_parse_lists(cmd, argc, argv, opts, lists, &npos);
	if (rc != TP_CLI_PARSED)
		return rc;
	a->nbases = lists[0].count;
	if (npos > 1)
		return tp_cli_usage_error(cmd, "unexpected argument '%s'", argv[2]);
	a->input = npos ? argv[1] : NULL;
	return parse_values(cmd, threads, level, chunk, xform, a);
}

/* ---- progress and summaries ------------------------------------------------- */

typedef struct progress {
	const char *what;
	double last;
} progress;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int show_progress(void *ctx, uint64_t done, uint64_t total)
{
	progress *p = ctx;
	double t = now();
	if (done < total && t - p->last < 0.1)
		return 0;
	p->last = t;
	char a[32], b[32];
	tp_fmt_bytes(done, a, sizeof(a));
	tp_fmt_bytes(total, b, sizeof(b));
	fprintf(stderr, "\r%s: %3.0f%% (%s / %s)%s", p->what, total ? 100.0 * done / total : 100.0,
		a, b, done >= total ? "\n" : "");
	return 0;
}

static void want_progress(args *a, progress *p, const char *what, const char *path)
{
	/* stat, not open: opening a FIFO input here would consume its writer. */
	struct stat st;
	off_t size = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : 0;
	if (!isatty(STDERR_FILENO) || size < (off_t)PROGRESS_MIN)
		return;
	p->what = what;
	a->opts.progress = show_progress;
	a->opts.progress_ctx = p;
}

static void print_summary(FILE *to, const char *verb, const tp_delta_stats *st,
			  bool delta_is_output)
{
	char t[32], d[32];
	tp_fmt_bytes(st->target_bytes, t, sizeof(t));
	tp_fmt_bytes(st->delta_bytes, d, sizeof(d));
	double ratio = st->target_bytes ? (double)st->delta_bytes / (double)st->target_bytes : 0;
	double mibs = st->seconds > 0 ? (double)st->target_bytes / st->seconds / 1048576.0 : 0;
	fprintf(to, "%s %s %s %s: ratio %.4f (%.1f%% saved), %.2f s, %.1f MiB/s\n", verb,
	       delta_is_output ? t : d, "->", delta_is_output ? d : t, ratio,
	       100.0 * (1.0 - ratio), st->seconds, mibs);
}

/* The library's message already names the operation ("delta apply: ..."). */
static int fail(void)
{
	fprintf(stderr, "tenpak: %s\n", tp_error_last());
	return TP_EXIT_FAIL;
}

/* ---- subcommands --------------------------------------------------------------- */

/* Parse a subcommand's arguments; true when it is already finished (help
 * printed or a usage error), with its exit code in *rc. */
static bool parse_or_finish(const char *cmd, const char *usage, int argc, char **argv, args *a,
			    int *rc)
{
	int parsed = parse_args(cmd, argc, argv, a);
	if (parsed == TP_CLI_HELP)
		fputs(usage, stdout);
	*rc = parsed == TP_CLI_HELP ? TP_EXIT_OK : parsed;
	return parsed != TP_CLI_PARSED;
}

static int open_input(const char *path, int *fd)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
	return 0;
}

typedef int (*file_fn)(const char *in, const char *const *bases, size_t nbases,
		       const char *out, const tp_delta_opts *opts, tp_delta_stats *stats);
typedef int (*fd_fn)(const char *in, const char *const *bases, size_t nbases, int out,
		     const tp_delta_opts *opts, tp_delta_stats *stats);

static int compress_to_fd(const char *in, const char *const *bases, size_t nbases, int out,
			  const tp_delta_opts *opts, tp_delta_stats *stats)
{
	return tp_delta_compress(in, bases, nbases, tp_delta_fd_write, &out, opts, stats);
}

static int apply_to_fd(const char *in, const char *const *bases, size_t nbases, int out,
		       const tp_delta_opts *opts, tp_delta_stats *stats)
{
	int fd, rc = open_input(in, &fd);
	if (rc < 0)
		return rc;
	rc = tp_delta_apply(tp_delta_fd_read, &fd, bases, nbases, out, opts, stats);
	close(fd);
	return rc;
}

/* compress and apply: one input, bases, -o OUT, a summary at the end. */
typedef struct transfer {
	const char *cmd, *name, *usage, *operands, *done;
	file_fn fn;
	fd_fn to_fd; /* for -o - */
	bool delta_is_output;
} transfer;

static int run_transfer(const transfer *t, int argc, char **argv)
{
	args a;
	progress p = { 0 };
	tp_delta_stats st = { 0 };
	int rc;
	if (parse_or_finish(t->cmd, t->usage, argc, argv, &a, &rc))
		return rc;
	if (!a.input || !a.out)
		return tp_cli_usage_error(t->cmd, "%s", t->operands);
	/* -o -: stdout carries the bytes and nothing else. */
	bool to_stdout = strcmp(a.out, "-") == 0;
	if (to_stdout && isatty(STDOUT_FILENO))
		return tp_cli_usage_error(t->cmd, "refusing to write binary data to a terminal");
	want_progress(&a, &p, t->name, a.input);
	if ((to_stdout ? t->to_fd(a.input, a.bases, a.nbases, STDOUT_FILENO, &a.opts, &st)
		       : t->fn(a.input, a.bases, a.nbases, a.out, &a.opts, &st)) < 0)
		return fail();
	print_summary(to_stdout ? stderr : stdout, t->done, &st, t->delta_is_output);
	return TP_EXIT_OK;
}

static int cmd_compress(int argc, char **argv)
{
	static const transfer t = { "delta compress", "compress", usage_compress, "needs TARGET and -o OUT",
				    "compressed", tp_delta_compress_file, compress_to_fd, true };
	return run_transfer(&t, argc, argv);
}

static int cmd_apply(int argc, char **argv)
{
	static const transfer t = { "delta apply", "apply", usage_apply, "needs DELTA and -o OUT", "applied",
				    tp_delta_apply_file, apply_to_fd, false };
	return run_transfer(&t, argc, argv);
}

static void print_segments(const tp_delta_layout *m)
{
	printf("%-48s %-8s %-6s %12s %12s %7s\n", "tensor", "dtype", "xform", "bytes", "delta",
	       "ratio");
	for (size_t i = 0; i < m->nsegs; i++) {
		const tp_delta_seg_info *s = &m->segs[i];
		printf("%-48s %-8s %-6s %12llu %12llu %7.4f%s\n", s->name ? s->name : "(bytes outside tensors)",
		       s->name ? tp_dtype_name(s->dtype) : "-", tp_delta_xform_name(s->xform),
		       (unsigned long long)s->size, (unsigned long long)s->stored_bytes,
		       s->size ? (double)s->stored_bytes / (double)s->size : 0.0,
		       s->chunks && s->same_chunks == s->chunks ? "  identical" : "");
	}
}

static void print_total(const tp_delta_layout *m, const char *label)
{
	char t[32], d[32];
	tp_fmt_bytes(m->target_size, t, sizeof(t));
	tp_fmt_bytes(m->delta_size, d, sizeof(d));
	double ratio = m->target_size ? (double)m->delta_size / (double)m->target_size : 0;
	printf("%s: %s -> %s, ratio %.4f (%.1f%% saved)\n", label, t, d, ratio,
	       100.0 * (1.0 - ratio));
}

static int print_manifest(const tp_delta_layout *m, bool json, bool estimated)
{
	if (json) {
		char *s;
		if (tp_delta_layout_to_json(m, &s) < 0)
			return -1;
		puts(s);
		free(s);
		return 0;
	}
	if (!estimated) {
		char sha[65];
		tp_sha256_hex(m->sha256, sha);
		printf("format version %u, chunk size %llu, target sha256 %s\n", m->version,
		       (unsigned long long)m->chunk_size, sha);
	}
	for (size_t i = 0; i < m->nbases; i++)
		printf("base %zu: %s (%llu bytes, fingerprint %.16s)\n", i, m->bases[i].name,
		       (unsigned long long)m->bases[i].size, m->bases[i].fingerprint);
	print_segments(m);
	print_total(m, estimated ? "estimated total" : "total");
	return 0;
}

static int cmd_estimate(int argc, char **argv)
{
	args a;
	tp_delta_layout *m = NULL;
	int rc;
	if (parse_or_finish("delta estimate", usage_estimate, argc, argv, &a, &rc))
		return rc;
	if (!a.input || a.out)
		return tp_cli_usage_error("delta estimate", "needs exactly one TARGET and no -o");
	if (tp_delta_estimate(&m, a.input, a.bases, a.nbases, &a.opts) < 0)
		return fail();
	rc = print_manifest(m, a.json, true) < 0 ? fail() : TP_EXIT_OK;
	tp_delta_layout_free(m);
	return rc;
}

static int cmd_inspect(int argc, char **argv)
{
	args a;
	tp_delta_layout *m = NULL;
	int rc;
	if (parse_or_finish("delta inspect", usage_inspect, argc, argv, &a, &rc))
		return rc;
	if (!a.input || a.out || a.nbases)
		return tp_cli_usage_error("delta inspect", "needs exactly one DELTA");
	int fd;
	if (open_input(a.input, &fd) < 0)
		return fail();
	rc = tp_delta_inspect(&m, tp_delta_fd_read, &fd);
	close(fd);
	if (rc < 0)
		return fail();
	rc = print_manifest(m, a.json, false) < 0 ? fail() : TP_EXIT_OK;
	tp_delta_layout_free(m);
	return rc;
}

/* ---- sparsify ------------------------------------------------------------------ */

#define SPARSIFY_EXIT_BUDGET 3
#define SPARSIFY_TEXT_MAX (256u << 20)

extern const unsigned char tp_optimize_text_calib[], tp_optimize_text_eval[];
extern const size_t tp_optimize_text_calib_len, tp_optimize_text_eval_len;

typedef struct sparsify_args {
	const char *base, *ft, *out, *density, *max_ppl, *max_kl, *bits, *select, *eval,
		*calib, *ctx, *max_tokens, *seed, *threads, *json;
	bool no_eval, no_estimate;
} sparsify_args;

/* A number, optionally with a trailing '%' (a percentage), into *out. */
static bool parse_fraction(const char *s, bool pct_ok, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno)
		return false;
	if (pct_ok && *end == '%') {
		v /= 100.0;
		end++;
	}
	if (*end || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static int sparsify_parse(int argc, char **argv, sparsify_args *a, tp_sparsify_opts *o)
{
	static const char *cmd = "delta sparsify";
	const tp_cli_opt opts[] = {
		{ "--base", NULL, &a->base }, { "-o", NULL, &a->out }, { "--output", NULL, &a->out },
		{ "--density", NULL, &a->density }, { "--max-ppl-delta", NULL, &a->max_ppl },
		{ "--max-kl", NULL, &a->max_kl }, { "--bits", NULL, &a->bits },
		{ "--select", NULL, &a->select }, { "--eval", NULL, &a->eval },
		{ "--calib", NULL, &a->calib }, { "--ctx", NULL, &a->ctx },
		{ "--max-tokens", NULL, &a->max_tokens }, { "--seed", NULL, &a->seed },
		{ "--threads", NULL, &a->threads }, { "--json", NULL, &a->json },
		{ "--no-eval", &a->no_eval, NULL }, { "--no-estimate", &a->no_estimate, NULL },
		{ 0 },
	};
	int npos = 0, rc = tp_cli_parse(cmd, argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP)
		fputs(usage_sparsify, stdout);
	if (rc != TP_CLI_PARSED)
		return rc;
	if (npos != 1 || !a->base || !a->out)
		return tp_cli_usage_error(cmd, "needs --base BASE_DIR, one FT_DIR and -o OUT_DIR");
	a->ft = argv[1];
	*o = (tp_sparsify_opts){ .density = 0.1, .bits = 8, .seed = 1,
				 .select = TP_SPARSIFY_SELECT_DARE };
	int budgets = !!a->density + !!a->max_ppl + !!a->max_kl;
	if (budgets > 1)
		return tp_cli_usage_error(cmd, "give one of --density, --max-ppl-delta, --max-kl");
	if (a->density && (!parse_fraction(a->density, true, &o->density) ||
			   !(o->density > 0 && o->density <= 1)))
		return tp_cli_usage_error(cmd, "--density must be in (0, 1] (or 0-100%%), got '%s'",
					  a->density);
	if (a->max_ppl && (!parse_fraction(a->max_ppl, false, &o->max_ppl_delta_pct) ||
			   !(o->max_ppl_delta_pct > 0)))
		return tp_cli_usage_error(cmd, "--max-ppl-delta must be a percentage > 0, got '%s'",
					  a->max_ppl);
	if (a->max_kl && (!parse_fraction(a->max_kl, false, &o->max_kl) || !(o->max_kl > 0)))
		return tp_cli_usage_error(cmd, "--max-kl must be > 0 nats, got '%s'", a->max_kl);
	if (budgets && (a->max_ppl || a->max_kl) && a->no_eval)
		return tp_cli_usage_error(cmd, "a quality budget needs the evaluation (no --no-eval)");
	size_t bits = 8, threads = 0;
	uint64_t seed = 1;
	if (!tp_cli_parse_size(a->bits, TP_SPARSIFY_BITS_MIN, TP_SPARSIFY_BITS_MAX, &bits))
		return tp_cli_usage_error(cmd, "--bits must be %d..%d", TP_SPARSIFY_BITS_MIN,
					  TP_SPARSIFY_BITS_MAX);
	o->bits = (unsigned)bits;
	if (a->select && tp_optimize_sparsify_select_from_name(a->select, &o->select) < 0)
		return tp_cli_usage_error(cmd, "--select must be magnitude, activation or dare");
	if (!tp_cli_parse_size(a->ctx, 4, 1u << 20, &o->ctx) ||
	    !tp_cli_parse_size(a->max_tokens, 0, SIZE_MAX, &o->max_tokens) ||
	    !tp_cli_parse_size(a->threads, 1, 256, &threads) ||
	    (a->seed && tp_parse_u64(a->seed, 0, UINT64_MAX, &seed) < 0))
		return tp_cli_usage_error(cmd, "bad number in --ctx, --max-tokens, --threads or "
					  "--seed");
	o->threads = (unsigned)threads;
	o->seed = seed;
	o->skip_estimate = a->no_estimate;
	return TP_CLI_PARSED;
}

static int sparsify_step(void *ctx, const tp_sparsify_step *s)
{
	(void)ctx;
	fprintf(stderr, "tenpak delta sparsify: density %.4f: KL %.5f, ppl %+.3f%% -> %s\n",
		s->density, s->kl, s->ppl_delta_pct, s->within ? "within budget" : "over budget");
	return 0;
}

static int sparsify_progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	fprintf(stderr, "\rtenpak delta sparsify: tensor %llu/%llu", (unsigned long long)done,
		(unsigned long long)total);
	if (done == total)
		fputc('\n', stderr);
	return 0;
}

static void sparsify_print(const sparsify_args *a, const tp_sparsify_result *r)
{
	printf("output       %s (LOSSY: not the fine-tune)\n", a->out);
	printf("recipe       select %s, density %.4f (%.2f%%), %u-bit values, per-row scales\n",
	       tp_optimize_sparsify_select_name(r->select), r->density, 100.0 * r->density, r->bits);
	printf("tensors      %llu: %llu sparsified, %llu kept exactly, %llu unchanged\n",
	       (unsigned long long)r->tensors, (unsigned long long)r->sparsified,
	       (unsigned long long)r->exact, (unsigned long long)r->unchanged);
	printf("kept         %llu of %llu changed weights nonzero in Q(delta) (%.2f%%)\n",
	       (unsigned long long)r->kept, (unsigned long long)r->changed_weights,
	       r->changed_weights ? 100.0 * (double)r->kept / (double)r->changed_weights : 0.0);
	if (r->has_quality) {
		printf("quality      vs the fine-tune on %zu tokens: ppl %.4f vs %.4f (%+.3f%%), "
		       "KL %.5f nats\n", r->eval_tokens, r->ppl_out, r->ppl_ft, r->ppl_delta_pct,
		       r->kl_out);
		if (r->has_base)
			printf("base         for reference: ppl %.4f (%+.3f%%), KL %.5f nats\n",
			       r->ppl_base, r->ppl_delta_base_pct, r->kl_base);
	}
	if (r->has_estimate) {
		char o[32], s[32];
		tp_fmt_bytes(r->out_bytes, o, sizeof(o));
		tp_fmt_bytes(r->stored_bytes, s, sizeof(s));
		printf("stored       %s of %s against the base (%.2f%%, estimate), %.3f bits per "
		       "changed weight\n", s, o, 100.0 * r->stored_fraction,
		       r->bits_per_changed_weight);
	}
	if (!r->within_budget)
		printf("budget       NOT met, even at density 1\n");
}

static int sparsify_json(const sparsify_args *a, const tp_sparsify_result *r)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "output", a->out);
	cJSON_AddBoolToObject(o, "lossy", true);
	cJSON_AddStringToObject(o, "select", tp_optimize_sparsify_select_name(r->select));
	cJSON_AddNumberToObject(o, "density", r->density);
	cJSON_AddNumberToObject(o, "bits", r->bits);
	cJSON_AddBoolToObject(o, "within_budget", r->within_budget);
	cJSON *t = cJSON_AddObjectToObject(o, "tensors");
	cJSON_AddNumberToObject(t, "total", (double)r->tensors);
	cJSON_AddNumberToObject(t, "sparsified", (double)r->sparsified);
	cJSON_AddNumberToObject(t, "exact", (double)r->exact);
	cJSON_AddNumberToObject(t, "unchanged", (double)r->unchanged);
	cJSON_AddNumberToObject(o, "changed_weights", (double)r->changed_weights);
	cJSON_AddNumberToObject(o, "kept", (double)r->kept);
	cJSON_AddNumberToObject(o, "out_bytes", (double)r->out_bytes);
	if (r->has_quality) {
		cJSON *q = cJSON_AddObjectToObject(o, "quality");
		cJSON_AddNumberToObject(q, "eval_tokens", (double)r->eval_tokens);
		cJSON_AddNumberToObject(q, "ppl_finetune", r->ppl_ft);
		cJSON_AddNumberToObject(q, "ppl", r->ppl_out);
		cJSON_AddNumberToObject(q, "ppl_delta_pct", r->ppl_delta_pct);
		cJSON_AddNumberToObject(q, "kl", r->kl_out);
		if (r->has_base) {
			cJSON_AddNumberToObject(q, "ppl_base", r->ppl_base);
			cJSON_AddNumberToObject(q, "ppl_delta_base_pct", r->ppl_delta_base_pct);
			cJSON_AddNumberToObject(q, "kl_base", r->kl_base);
		}
	}
	if (r->has_estimate) {
		cJSON *e = cJSON_AddObjectToObject(o, "stored");
		cJSON_AddNumberToObject(e, "bytes", (double)r->stored_bytes);
		cJSON_AddNumberToObject(e, "fraction", r->stored_fraction);
		cJSON_AddNumberToObject(e, "bits_per_changed_weight", r->bits_per_changed_weight);
	}
	cJSON *steps = cJSON_AddArrayToObject(o, "steps");
	for (size_t i = 0; steps && i < r->nsteps; i++) {
		cJSON *s = cJSON_CreateObject();
		cJSON_AddNumberToObject(s, "density", r->steps[i].density);
		cJSON_AddNumberToObject(s, "kl", r->steps[i].kl);
		cJSON_AddNumberToObject(s, "ppl", r->steps[i].ppl);
		cJSON_AddNumberToObject(s, "ppl_delta_pct", r->steps[i].ppl_delta_pct);
		cJSON_AddBoolToObject(s, "within", r->steps[i].within);
		cJSON_AddItemToArray(steps, s);
	}
	char *txt = cJSON_Print(o);
	cJSON_Delete(o);
	if (!txt)
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc = 0;
	if (strcmp(a->json, "-") == 0)
		puts(txt);
	else {
		FILE *f = fopen(a->json, "w");
		if (!f || fputs(txt, f) < 0 || fputc('\n', f) < 0)
			rc = tp_error_set(TP_EIO, "writing %s: %s", a->json, strerror(errno));
		if (f && fclose(f) != 0 && rc == 0)
			rc = tp_error_set(TP_EIO, "writing %s: %s", a->json, strerror(errno));
	}
	free(txt);
	return rc;
}

static int cmd_sparsify(int argc, char **argv)
{
	sparsify_args a = { 0 };
	tp_sparsify_opts o;
	tp_buf eval = TP_BUF_INIT(SPARSIFY_TEXT_MAX), calib = TP_BUF_INIT(SPARSIFY_TEXT_MAX);
	tp_sparsify_result *r = NULL;
	int rc = sparsify_parse(argc, argv, &a, &o);
	if (rc != TP_CLI_PARSED)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	if (!a.no_eval) {
		if (a.eval && tp_cli_read_text(a.eval, &eval) < 0)
			goto fail;
		o.eval_text = a.eval ? (eval.ptr ? eval.ptr : "") : (const char *)tp_optimize_text_eval;
		o.eval_len = a.eval ? eval.len : tp_optimize_text_eval_len;
	}
	if (o.select == TP_SPARSIFY_SELECT_ACTIVATION) {
		if (a.calib && tp_cli_read_text(a.calib, &calib) < 0)
			goto fail;
		o.calib_text = a.calib ? (calib.ptr ? calib.ptr : "")
				       : (const char *)tp_optimize_text_calib;
		o.calib_len = a.calib ? calib.len : tp_optimize_text_calib_len;
	}
	if (isatty(STDERR_FILENO))
		o.progress = sparsify_progress;
	o.on_step = o.max_kl > 0 || o.max_ppl_delta_pct > 0 ? sparsify_step : NULL;
	if (!(r = calloc(1, sizeof(*r)))) {
		tp_error_set(TP_ENOMEM, "out of memory");
		goto fail;
	}
	fprintf(stderr, "tenpak delta sparsify: %s on %s -> %s\n", a.ft, a.base, a.out);
	if (tp_optimize_sparsify(a.base, a.ft, a.out, &o, r) < 0)
		goto fail;
	if (!a.json || strcmp(a.json, "-") != 0)
		sparsify_print(&a, r);
	if (a.json && sparsify_json(&a, r) < 0)
		goto fail;
	rc = r->within_budget ? TP_EXIT_OK : SPARSIFY_EXIT_BUDGET;
	goto done;
fail:
	rc = fail();
done:
	free(r);
	tp_buf_free(&eval);
	tp_buf_free(&calib);
	return rc;
}

int tp_cmd_delta(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "compress", cmd_compress },
		{ "apply", cmd_apply },
		{ "estimate", cmd_estimate },
		{ "inspect", cmd_inspect },
		{ "sparsify", cmd_sparsify },
	};
	if (argc < 2)
		return tp_cli_usage_error("delta", "missing subcommand (compress, apply, estimate, "
					  "inspect, sparsify)");
	if (tp_cli_is_help(argv[1])) {
		fputs(usage_delta, stdout);
		return TP_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	if (argv[1][0] == '-')
		return tp_cli_usage_error("delta", "unknown option '%s'", argv[1]);
	return tp_cli_usage_error("delta", "unknown subcommand '%s'", argv[1]);
}
