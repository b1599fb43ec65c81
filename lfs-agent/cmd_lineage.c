/* tenpak lineage: which base each model file would be stored against, and why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tp_delta.h"
#include "transfer.h"

static const char lineage_help[] =
	"usage: tenpak lineage [PATH...] [--json]\n"
	"\n"
	"For each model file (the LFS files at HEAD ending in .safetensors, or the\n"
	"PATHs given), list the base candidates tenpak finds, with their evidence,\n"
	"in order of trust:\n"
	"  override   git config tenpak.<path-or-glob>.base = PATH | oid:<sha256>\n"
	"  metadata   config.json _name_or_path / base_model, README.md front matter\n"
	"             base_model, adapter_config.json base_model_name_or_path; a name\n"
	"             is a directory of this repository, a hub id mapped by git config\n"
	"             tenpak.<org/name>.model, or a hub id in the Hugging Face cache\n"
	"  history    the previous version of the same path on HEAD or a local branch\n"
	"When the bytes are on this machine, each candidate's delta is estimated and\n"
	"the smallest is the choice, as the agent decides on push.\n"
	"\n"
	"  --json   one JSON object per file, one per line\n";

/* Estimated delta size of target against a candidate, when every file is
 * local; false when something is missing. */
static bool estimate_local(tp_lineage_repo *repo, const char *target,
			   const tp_lineage_candidate *c, uint64_t *est)
{
	char **paths = calloc(c->nfiles + 1, sizeof(*paths));
	bool ok = paths != NULL;
	for (size_t i = 0; ok && i < c->nfiles; i++) {
		const tp_lineage_file *f = &c->files[i];
		ok = f->local ? (paths[i] = strdup(f->local)) != NULL
			      : tp_lineage_find_local(repo, f->oid, f->size, &paths[i]) == 0;
	}
	tp_delta_manifest *m = NULL;
	if (ok)
		ok = tp_delta_estimate(&m, target, (const char *const *)paths, c ? c->nfiles : 0,
				       NULL) == 0;
	if (ok)
		*est = m->delta_size;
	tp_delta_manifest_free(m);
	for (size_t i = 0; paths && i < c->nfiles; i++)
		free(paths[i]);
	free(paths);
	return ok;
}

static void json_string(const char *s)
{
	putchar('"');
	tp_cli_json_text(s);
	putchar('"');
}

static void report(tp_lineage_repo *repo, const tp_lineage *l, bool json)
{
	char *target = NULL;
	bool have_target = tp_lineage_find_local(repo, l->target.oid, l->target.size, &target) == 0;
	uint64_t whole = 0, best = UINT64_MAX;
	long choice = -1;
	tp_delta_manifest *m = NULL;
	if (have_target && tp_delta_estimate(&m, target, NULL, 0, NULL) == 0) {
		whole = m->delta_size;
		best = whole;
	}
	tp_delta_manifest_free(m);
	uint64_t *est = calloc(l->ncandidates + 1, sizeof(*est));
	for (size_t i = 0; est && i < l->ncandidates; i++) {
		est[i] = UINT64_MAX;
		if (have_target && estimate_local(repo, target, &l->candidates[i], &est[i]) &&
		    est[i] < best && tp_transfer_delta_wins(est[i], whole)) {
			best = est[i];
			choice = (long)i;
		}
	}
	if (json) {
		printf("{\"path\":");
		json_string(l->target.path);
		printf(",\"oid\":\"%s\",\"size\":%llu,\"candidates\":[", l->target.oid,
		       (unsigned long long)l->target.size);
	} else {
		printf("%s  (%llu bytes, oid %.12s)\n", l->target.path,
		       (unsigned long long)l->target.size, l->target.oid);
	}
	for (size_t i = 0; i < l->ncandidates; i++) {
		const tp_lineage_candidate *c = &l->candidates[i];
		if (json) {
			printf("%s{\"source\":\"%s\",\"evidence\":", i ? "," : "",
			       tp_lineage_source_name(c->source));
			json_string(c->evidence);
			printf(",\"files\":[");
			for (size_t k = 0; k < c->nfiles; k++) {
				printf("%s{\"path\":", k ? "," : "");
				json_string(c->files[k].path);
				printf(",\"oid\":\"%s\",\"size\":%llu}", c->files[k].oid,
				       (unsigned long long)c->files[k].size);
			}
			printf("]");
			if (est && est[i] != UINT64_MAX)
				printf(",\"estimated_bytes\":%llu", (unsigned long long)est[i]);
			printf("}");
			continue;
		}
		printf("  %-9s %s\n", tp_lineage_source_name(c->source), c->evidence);
		for (size_t k = 0; k < c->nfiles; k++)
			printf("            %s (oid %.12s)\n", c->files[k].path, c->files[k].oid);
		if (est && est[i] != UINT64_MAX)
			printf("            estimated delta: %llu bytes\n", (unsigned long long)est[i]);
		else
			printf("            not estimated: bytes not on this machine\n");
	}
	if (json) {
		printf("],\"whole_estimated_bytes\":%llu,\"choice\":", (unsigned long long)whole);
		if (choice >= 0)
			printf("%ld}\n", choice);
		else
			printf("%s}\n", have_target ? "\"whole\"" : "null");
	} else if (!have_target) {
		printf("  choice: unknown (the file's bytes are not on this machine)\n");
	} else if (choice >= 0) {
		printf("  choice: %s candidate %ld, %llu bytes instead of %llu whole\n",
		       tp_lineage_source_name(l->candidates[choice].source), choice + 1,
		       (unsigned long long)best, (unsigned long long)whole);
	} else {
		printf("  choice: whole (%llu bytes estimated)\n", (unsigned long long)whole);
	}
	free(est);
	free(target);
}

int tp_cmd_lineage(int argc, char **argv)
{
	bool json = false;
	int npos = 0;
	tp_cli_opt opts[] = { { "--json", &json, NULL }, { NULL, NULL, NULL } };
	int rc = tp_cli_parse("lineage", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(lineage_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	tp_lineage_repo *repo = NULL;
	char **paths = NULL;
	size_t n = 0;
	int exit_code = TP_EXIT_OK;
	if (tp_lineage_repo_open(&repo) != 0)
		return tp_cli_fail("lineage");
	if (npos == 0 && tp_lineage_list_models(repo, &paths, &n) != 0) {
		tp_lineage_repo_free(repo);
		return tp_cli_fail("lineage");
	}
	size_t count = npos ? (size_t)npos : n;
	for (size_t i = 0; i < count; i++) {
		tp_lineage *l = NULL;
		const char *path = npos ? argv[1 + i] : paths[i];
		if (tp_lineage_find_path(&l, repo, path) != 0) {
			tp_cli_fail("lineage");
			exit_code = TP_EXIT_FAIL;
			continue;
		}
		report(repo, l, json);
		tp_lineage_free(l);
	}
	tp_lineage_paths_free(paths, n);
	tp_lineage_repo_free(repo);
	return exit_code;
}
