/* `tenpak hooks`, `tenpak hook pre-push` and `tenpak report`: the pre-push
 * hook's commands (the work is in hooks/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tp_hooks.h"

#define REFS_INPUT_MAX (16u << 20)

static const char hooks_help[] =
	"usage: tenpak hooks install | uninstall\n"
	"\n"
	"Install or remove the pre-push hook of the repository in the current\n"
	"directory (in core.hooksPath when that is set, else .git/hooks). The hook\n"
	"runs 'git lfs pre-push' as git-lfs's own hook does, so LFS objects are\n"
	"still uploaded, then 'tenpak hook pre-push', which acts on the models a\n"
	"push adds or changes by tenpak.optimize.onpush (off by default; see\n"
	"'tenpak hook --help').\n"
	"\n"
	"A pre-push hook already there is never overwritten: it is kept as\n"
	"pre-push.tenpak-saved and runs first, with the same arguments and input\n"
	"(git-lfs's own hook is kept but not run twice). 'tenpak hooks uninstall'\n"
	"removes tenpak's hook and puts the saved one back; a pre-push hook that\n"
	"is not tenpak's is left alone. 'tenpak install --hooks' installs it too.\n";

static const char hook_help[] =
	"usage: tenpak hook pre-push REMOTE URL  < ref lines\n"
	"\n"
	"Run by the pre-push hook ('tenpak hooks install') with git's arguments\n"
	"and ref lines. Finds the *.safetensors files the push adds or changes\n"
	"(against the remote's commit; a new branch against its merge base with\n"
	"the remote's branches; deletions ignored); their directories are the\n"
	"models (every shard of a sharded model). What it does is set by\n"
	"git config tenpak.optimize.onpush:\n"
	"  off         nothing (the default)\n"
	"  report      run 'tenpak optimize --quick' on each changed model, print a\n"
	"              summary, write report.json, report.md and report.svg under\n"
	"              <git dir>/tenpak/reports/<commit>/<model dir>/ and store the\n"
	"              JSON as reports/<oid>.json in the store ('tenpak report')\n"
	"  background  the same, detached: the push does not wait; a model being\n"
	"              optimized by an earlier push is not started twice\n"
	"  enforce     like report, and the push is refused when no candidate meets\n"
	"              the constraints (or the model cannot be checked)\n"
	"The optimizer gets --budget from tenpak.optimize.budget (seconds, default\n"
	"120) and --NAME VALUE for each tenpak.optimize.NAME that is set, NAME one\n"
	"of: candidates, max-tokens, ctx, threads, eval, calib, hardware,\n"
	"max-ppl-delta, max-kl, min-compression, max-latency-p99-ms,\n"
	"min-throughput, max-memory-gb.\n"
	"In report and background modes a failure of tenpak's own only warns: the\n"
	"push goes on. 'git push --no-verify' skips the hook.\n";

static const char report_help[] =
	"usage: tenpak report OID|PATH [--json] [--store URL]\n"
	"\n"
	"Print the optimizer report a push stored for a model (see 'tenpak hook\n"
	"--help'): by the LFS oid of a weight file, or by the PATH of a weight file\n"
	"or model directory in this repository's HEAD. Works from any clone that\n"
	"reaches the store.\n"
	"\n"
	"  --json       the stored JSON report, as stored\n"
	"  --store URL  the store to read (default: as for pushes)\n";

int tp_cli_hooks_install(void)
{
	tp_git_repo *repo = NULL;
	tp_hooks_install_result res = { 0 };
	tp_hooks_mode mode = TP_HOOKS_OFF;
	char *exe = NULL;
	int rc = tp_git_repo_open(&repo);
	if (rc == TP_ENOTFOUND)
		tp_error_set(rc, "the pre-push hook goes into a repository: run this inside one");
	if (rc || (rc = tp_cli_self_path(&exe)) != 0 || (rc = tp_hooks_install(repo, exe, &res)) != 0)
		goto done;
	printf("tenpak: pre-push hook %s: %s\n", res.updated ? "updated" : "installed", res.hook);
	if (res.saved && res.chained)
		printf("  the hook that was there is kept as %s and runs first\n", res.saved);
	else if (res.saved)
		printf("  git-lfs's own hook is kept as %s\n"
		       "  (not chained: tenpak's hook runs 'git lfs pre-push' itself)\n", res.saved);
	if (res.saved)
		printf("  'tenpak hooks uninstall' puts it back\n");
	if (tp_hooks_mode_get(repo, &mode) == 0)
		printf("  tenpak.optimize.onpush = %s%s\n", tp_hooks_mode_name(mode),
		       mode == TP_HOOKS_OFF ? " (set it to report, background or enforce for advice "
					      "on push)" : "");
done:
	tp_hooks_install_result_clear(&res);
	free(exe);
	tp_git_repo_free(repo);
	return rc;
}

int tp_cli_hooks_uninstall(void)
{
	tp_git_repo *repo = NULL;
	tp_hooks_uninstall_result res = { 0 };
	int rc = tp_git_repo_open(&repo);
	if (rc == TP_ENOTFOUND)
		tp_error_set(rc, "the pre-push hook is a repository's: run this inside one");
	if (rc || (rc = tp_hooks_uninstall(repo, &res)) != 0)
		goto done;
	if (res.foreign)
		printf("tenpak: %s is not tenpak's hook: left as it is\n", res.hook);
	else if (res.removed)
		printf("tenpak: pre-push hook removed: %s%s\n", res.hook,
		       res.restored ? " (the earlier hook is back)" : "");
	else if (res.restored)
		printf("tenpak: the earlier pre-push hook is back: %s\n", res.hook);
	else
		printf("tenpak: no pre-push hook of tenpak's in %s\n", res.hook);
done:
	tp_hooks_uninstall_result_clear(&res);
	tp_git_repo_free(repo);
	return rc;
}

int tp_cmd_hooks(int argc, char **argv)
{
	int npos = 0;
	const tp_cli_opt opts[] = { { 0 } };
	int rc = tp_cli_parse("hooks", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(hooks_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	if (npos != 1)
		return tp_cli_usage_error("hooks", "expected 'install' or 'uninstall'");
	if (strcmp(argv[1], "install") == 0)
		rc = tp_cli_hooks_install();
	else if (strcmp(argv[1], "uninstall") == 0)
		rc = tp_cli_hooks_uninstall();
	else
		return tp_cli_usage_error("hooks", "unknown subcommand '%s'", argv[1]);
	return rc ? tp_cli_fail("hooks") : TP_EXIT_OK;
}

typedef struct store_ctx {
	tp_git_repo *repo;
} store_ctx;

static int open_store(void *ctx, tp_store **out)
{
	store_ctx *s = ctx;
	return tp_cli_store_open(s->repo, NULL, out, NULL);
}

int tp_cmd_hook(int argc, char **argv)
{
	int npos = 0;
	const tp_cli_opt opts[] = { { 0 } };
	int rc = tp_cli_parse("hook", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(hook_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	if (npos < 1 || strcmp(argv[1], "pre-push") != 0)
		return tp_cli_usage_error("hook", "expected 'pre-push REMOTE URL'");
	if (npos != 3)
		return tp_cli_usage_error("hook", "pre-push takes REMOTE and URL");

	tp_git_repo *repo = NULL;
	tp_buf in = TP_BUF_INIT(REFS_INPUT_MAX);
	char *exe = NULL;
	tp_hooks_mode mode = TP_HOOKS_OFF;
	rc = tp_fs_read_fd(0, "the pre-push input", &in);
	if (!rc)
		rc = tp_git_repo_open(&repo);
	if (!rc)
		rc = tp_cli_self_path(&exe);
	if (!rc) {
		store_ctx sc = { repo };
		tp_hooks_push p = { exe, argv[2], argv[3], open_store, &sc, stderr };
		rc = tp_hooks_pre_push(repo, &p, in.ptr ? in.ptr : "", in.len, &mode);
	}
	int exit_code = TP_EXIT_OK;
	if (rc == 1) {
		exit_code = TP_EXIT_FAIL; /* refused, and said why */
	} else if (rc < 0 && (mode == TP_HOOKS_ENFORCE || rc == TP_ECONFIG)) {
		/* enforce cannot vouch for a push it could not check, and a
		 * misspelt mode might have been enforce */
		fprintf(stderr, "tenpak: pre-push: %s; push refused ('git push --no-verify' "
				"skips the hook)\n", tp_error_last());
		exit_code = TP_EXIT_FAIL;
	} else if (rc < 0) {
		fprintf(stderr, "tenpak: warning: pre-push: %s; the push goes on\n", tp_error_last());
	}
	tp_buf_free(&in);
	free(exe);
	tp_git_repo_free(repo);
	return exit_code;
}

int tp_cmd_report(int argc, char **argv)
{
	bool json = false;
	const char *store_flag = NULL;
	int npos = 0;
	const tp_cli_opt opts[] = {
		{ "--json", &json, NULL },
		{ "--store", NULL, &store_flag },
		{ 0 },
	};
	int rc = tp_cli_parse("report", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(report_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	if (npos != 1)
		return tp_cli_usage_error("report", "expected one OID or PATH");
	const char *what = argv[1];
	tp_git_repo *repo = NULL;
	tp_store *store = NULL;
	char oid[TP_OID_HEXLEN + 1], *text = NULL;
	rc = tp_git_repo_open(&repo);
	if (rc == TP_ENOTFOUND)
		rc = 0; /* an oid needs no repository, only a store */
	if (rc)
		goto done;
	if (tp_oid_valid(what)) {
		snprintf(oid, sizeof(oid), "%s", what);
	} else if (!repo) {
		rc = tp_error_set(TP_EINVAL, "'%s' is no oid, and paths need a repository", what);
		goto done;
	} else if ((rc = tp_hooks_report_oid(repo, what, oid)) != 0) {
		goto done;
	}
	if ((rc = tp_cli_store_open_existing(repo, store_flag, &store, NULL)) != 0 ||
	    (rc = tp_hooks_report_load(store, oid, &text)) != 0)
		goto done;
	if (json) {
		printf("%s\n", text);
	} else {
		printf("report for %s (reports/%s.json in %s)\n", what, oid, tp_store_url(store));
		rc = tp_hooks_report_print(stdout, text, strlen(text));
	}
done:
	free(text);
	tp_store_free(store);
	tp_git_repo_free(repo);
	return rc ? tp_cli_fail("report") : TP_EXIT_OK;
}
