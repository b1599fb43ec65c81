/* `tenpak delta`: compress, apply, estimate and inspect tensor deltas. */
#include "cli.h"
#include "tp_common.h"
#include "tp_delta.h"

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
	"OUT may be - (stdout), a FIFO or a device: those are written in place.\n";
static const char usage_apply[] =
	"usage: tenpak delta apply [--base FILE]... DELTA -o OUT [--threads N]\n"
	"Rebuild the file from DELTA and its bases; OUT is written only if its sha256 matches.\n"
	"OUT may be - (stdout), a FIFO or a device: those are written as the bytes come,\n"
	"and a sha256 mismatch then shows only in the exit status.\n";
static const char usage_estimate[] =
	"usage: tenpak delta estimate [--base FILE]... TARGET [--json] [--threads N] [--level N]\n"
	"Predict the delta size from a sample of each tensor's chunks.\n";
static const char usage_inspect[] =
	"usage: tenpak delta inspect DELTA [--json]\n"
	"Show a delta's manifest: bases, tensors, transforms and sizes.\n";
static const char usage_delta[] =
	"usage: tenpak delta <compress|apply|estimate|inspect> [options]\n"
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
	};
	if (argc < 2)
		return tp_cli_usage_error("delta", "missing subcommand (compress, apply, estimate, "
					  "inspect)");
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
