/* tenpak lineage: which base each model file would be stored against, and why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "tp_delta.h"
#include "tp_transfer.h"

static const char lineage_help[] =
	"usage: tenpak lineage [PATH...] [--store URL] [--json]\n"
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
	"When the file's bytes are on this machine, tenpak plans its push as the\n"
	"agent does: each candidate's delta is estimated against base bytes from\n"
	"this machine (checked against their oids) or the store, and the smallest\n"
	"is the choice if it beats the whole file. A candidate not estimated says\n"
	"why: its bytes are missing, its chain would pass tenpak.maxchain, or only\n"
	"the first 4 candidates are estimated.\n"
	"\n"
	"Names in metadata that resolve to nothing are listed with the git config\n"
	"key that would resolve them. Next to the estimate, what the store holds for\n"
	"the file: its kind, bases, chain depth, stored size and the reason recorded\n"
	"when it was pushed, or \"not in the store\".\n"
	"\n"
	"  --store URL  the store to look in (default: TENPAK_STORE, else git config\n"
	"               tenpak.store, else the per-user default store)\n"
	"  --json       one JSON object per file, one per line\n";

/* What the store holds for oid: an object, JSON null when absent, or
 * {"error": ...} when unreadable. */
static cJSON *stored_state(tp_store *store, const char *oid)
{
	tp_cli_stored st;
	int rc = tp_cli_stored_load(store, oid, &st);
	if (rc == TP_ENOTFOUND)
		return cJSON_CreateNull();
	cJSON *o = cJSON_CreateObject();
	if (rc) {
		cJSON_AddStringToObject(o, "error", tp_error_last());
		return o;
	}
	tp_cli_stored_json(o, &st);
	tp_cli_stored_clear(&st);
	return o;
}

static const char *json_text(const cJSON *o, const char *key)
{
	const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
	return v ? v : "";
}

static void print_stored(const cJSON *st, uint64_t size)
{
	if (!st) {
		printf("  stored: unknown (the store could not be opened)\n");
		return;
	}
	if (cJSON_IsNull(st)) {
		printf("  stored: not in the store\n");
		return;
	}
	if (*json_text(st, "error")) {
		printf("  stored: unreadable: %s\n", json_text(st, "error"));
		return;
	}
	double stored = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(st, "stored_bytes"));
	const cJSON *bases = cJSON_GetObjectItemCaseSensitive(st, "bases"), *b;
	printf("  stored: %s", json_text(st, "kind"));
	if (cJSON_GetArraySize(bases) > 0)
		printf(" against %d base%s", cJSON_GetArraySize(bases),
		       cJSON_GetArraySize(bases) > 1 ? "s" : "");
	if (cJSON_GetObjectItemCaseSensitive(st, "depth"))
		printf(", depth %d",
		       (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(st, "depth")));
	printf(", %.0f bytes (%.1f%% of %llu)\n", stored,
	       size ? 100.0 * stored / (double)size : 0.0, (unsigned long long)size);
	cJSON_ArrayForEach(b, bases)
		printf("          base %.12s%s%s%s\n", json_text(b, "oid"),
		       *json_text(b, "path") ? " (" : "", json_text(b, "path"),
		       *json_text(b, "path") ? ")" : "");
	if (*json_text(st, "evidence"))
		printf("          recorded: %s: %s\n", json_text(st, "source"),
		       json_text(st, "evidence"));
	if (*json_text(st, "reason"))
		printf("          reason: %s\n", json_text(st, "reason"));
}

/* Candidate i of plan (NULL: the file's bytes are not on this machine). */
static const tp_transfer_candidate *planned(const tp_transfer_plan *plan, size_t i)
{
	return plan && plan->candidates[i].verdict == TP_TRANSFER_VERDICT_ESTIMATED
		       ? &plan->candidates[i] : NULL;
}

static const char *not_estimated(const tp_transfer_plan *plan, size_t i)
{
	return plan && plan->candidates[i].why ? plan->candidates[i].why
					       : "bytes not on this machine";
}

static void print_text(const tp_lineage *l, const tp_transfer_plan *plan, uint64_t whole,
		       const cJSON *stored)
{
	printf("%s  (%llu bytes, oid %.12s)\n", l->target.path,
	       (unsigned long long)l->target.size, l->target.oid);
	for (size_t i = 0; i < l->ncandidates; i++) {
		const tp_lineage_candidate *c = &l->candidates[i];
		printf("  %-9s %s\n", tp_lineage_source_name(c->source), c->evidence);
		for (size_t k = 0; k < c->nfiles; k++)
			printf("            %s (oid %.12s)\n", c->files[k].path, c->files[k].oid);
		if (planned(plan, i))
			printf("            estimated delta: %llu bytes\n",
			       (unsigned long long)planned(plan, i)->estimate);
		else
			printf("            not estimated: %s\n", not_estimated(plan, i));
	}
	for (size_t i = 0; i < l->nunresolved; i++) {
		const tp_lineage_unresolved *u = &l->unresolved[i];
		printf("  unresolved \"%s\" (%s): %s\n", u->name, u->where, u->reason);
		printf("            to use it: git config %s <path|oid:...>\n", u->key);
	}
	if (!plan)
		printf("  choice: unknown (the file's bytes are not on this machine)\n");
	else if (plan->choice >= 0)
		printf("  choice: %s candidate %ld, %llu bytes instead of %llu whole\n",
		       tp_lineage_source_name(l->candidates[plan->choice].source), plan->choice + 1,
		       (unsigned long long)plan->candidates[plan->choice].estimate,
		       (unsigned long long)whole);
	else
		printf("  choice: whole (%llu bytes estimated)\n", (unsigned long long)whole);
	print_stored(stored, l->target.size);
}

static cJSON *report_json(const tp_lineage *l, const tp_transfer_plan *plan, uint64_t whole,
			  cJSON *stored)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "path", l->target.path);
	cJSON_AddStringToObject(o, "oid", l->target.oid);
	cJSON_AddNumberToObject(o, "size", (double)l->target.size);
	cJSON *cands = cJSON_AddArrayToObject(o, "candidates");
	for (size_t i = 0; i < l->ncandidates; i++) {
		const tp_lineage_candidate *c = &l->candidates[i];
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "source", tp_lineage_source_name(c->source));
		cJSON_AddStringToObject(j, "evidence", c->evidence);
		cJSON *files = cJSON_AddArrayToObject(j, "files");
		for (size_t k = 0; k < c->nfiles; k++) {
			cJSON *f = cJSON_CreateObject();
			cJSON_AddStringToObject(f, "path", c->files[k].path);
			cJSON_AddStringToObject(f, "oid", c->files[k].oid);
			if (c->files[k].size == TP_LINEAGE_SIZE_UNKNOWN)
				cJSON_AddNullToObject(f, "size"); /* an oid: base the repo lacks */
			else
				cJSON_AddNumberToObject(f, "size", (double)c->files[k].size);
			cJSON_AddItemToArray(files, f);
		}
		if (planned(plan, i))
			cJSON_AddNumberToObject(j, "estimated_bytes", (double)planned(plan, i)->estimate);
		else
			cJSON_AddStringToObject(j, "not_estimated", not_estimated(plan, i));
		cJSON_AddItemToArray(cands, j);
	}
	cJSON *unres = cJSON_AddArrayToObject(o, "unresolved");
	for (size_t i = 0; i < l->nunresolved; i++) {
		const tp_lineage_unresolved *u = &l->unresolved[i];
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "name", u->name);
		cJSON_AddStringToObject(j, "where", u->where);
		cJSON_AddStringToObject(j, "reason", u->reason);
		cJSON_AddStringToObject(j, "key", u->key);
		cJSON_AddItemToArray(unres, j);
	}
	cJSON_AddNumberToObject(o, "whole_estimated_bytes", (double)whole);
	if (plan && plan->choice >= 0)
		cJSON_AddNumberToObject(o, "choice", (double)plan->choice);
	else if (plan)
		cJSON_AddStringToObject(o, "choice", "whole");
	else
		cJSON_AddNullToObject(o, "choice");
	if (stored)
		cJSON_AddItemToObject(o, "stored", stored);
	return o;
}

/* Whole size of target when the plan had no reason to estimate it (no
 * candidate), for the choice line. */
static uint64_t whole_size(const tp_transfer_plan *plan, const char *target)
{
	uint64_t whole = 0;
	tp_delta_layout *m = NULL;
	if (plan->whole != TP_TRANSFER_UNESTIMATED)
		return plan->whole;
	if (tp_delta_estimate(&m, target, NULL, 0, NULL) == 0)
		whole = m->delta_size;
	tp_delta_layout_free(m);
	return whole;
}

/* The plan is the one a push of this file would execute, made by t against
 * the store. store may be NULL: there is none yet (no_store), or it could
 * not be opened; t then plans against an empty one. */
static int report(tp_git_repo *repo, tp_transfer *t, tp_store *store, bool no_store,
		  const tp_lineage *l, bool json)
{
	char *target = NULL;
	tp_transfer_plan *plan = NULL;
	uint64_t whole = 0;
	int rc = 0;
	if (tp_lineage_find_local(repo, l->target.oid, l->target.size, &target) == 0) {
		if ((rc = tp_transfer_plan_upload(t, target, l, &plan)) != 0) {
			free(target);
			return tp_error_wrap(rc, "%s", l->target.path);
		}
		whole = whole_size(plan, target);
	}
	cJSON *stored = store ? stored_state(store, l->target.oid)
			      : no_store ? cJSON_CreateNull() : NULL;
	if (json) {
		rc = tp_cli_json_print(report_json(l, plan, whole, stored));
	} else {
		print_text(l, plan, whole, stored);
		cJSON_Delete(stored);
	}
	tp_transfer_plan_free(plan);
	free(target);
	return rc;
}

int tp_cmd_lineage(int argc, char **argv)
{
	bool json = false;
	const char *store_flag = NULL;
	int npos = 0;
	tp_cli_opt opts[] = {
		{ "--json", &json, NULL },
		{ "--store", NULL, &store_flag },
		{ NULL, NULL, NULL },
	};
	int rc = tp_cli_parse("lineage", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(lineage_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	tp_git_repo *repo = NULL;
	tp_store *store = NULL, *empty = NULL;
	tp_transfer *t = NULL;
	char **paths = NULL;
	size_t n = 0;
	int exit_code = TP_EXIT_OK;
	if (tp_git_repo_open(&repo) != 0)
		return tp_cli_fail("lineage");
	if (npos == 0 && tp_lineage_list_models(repo, &paths, &n) != 0) {
		tp_git_repo_free(repo);
		return tp_cli_fail("lineage");
	}
	/* Lineage is worth showing before the first push: without a store, say
	 * so once and show the estimates (and never create one). */
	bool no_store = false;
	if ((rc = tp_cli_store_open_existing(repo, store_flag, &store, NULL)) != 0) {
		no_store = rc == TP_ENOTFOUND;
		fprintf(stderr, "tenpak: lineage: %s; showing estimates only\n", tp_error_last());
	}
	/* What a push would do: an upload's transfer, planning against the
	 * store (none yet: an empty one, as the first push finds it). */
	if ((!store && tp_store_mem_new(&empty) != 0) ||
	    tp_transfer_new(&t, store ? store : empty, repo, NULL) != 0)
		exit_code = tp_cli_fail("lineage");
	size_t count = t ? (npos ? (size_t)npos : n) : 0;
	for (size_t i = 0; i < count; i++) {
		tp_lineage *l = NULL;
		const char *path = npos ? argv[1 + i] : paths[i];
		if (tp_lineage_find_path(&l, repo, path) != 0 ||
		    report(repo, t, store, no_store, l, json) != 0) {
			tp_cli_fail("lineage");
			exit_code = TP_EXIT_FAIL;
		}
		tp_lineage_free(l);
	}
	tp_transfer_free(t);
	tp_store_free(empty);
	tp_store_free(store);
	tp_lineage_paths_free(paths, n);
	tp_git_repo_free(repo);
	return exit_code;
}
