/* Stored reports: their keys, finding a model's oid by path, printing. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "hooks_internal.h"
#include "tp_lineage.h"

#define REPORT_MAX (64u << 20)
#define POINTER_READ_MAX 1024

void tp_hooks_report_key(char out[TP_HOOKS_REPORT_KEY_LEN + 1], const char *oid)
{
	snprintf(out, TP_HOOKS_REPORT_KEY_LEN + 1, "reports/%s.json", oid);
}

static int blob_oid(git_repository *repo, const git_oid *id, char oid[TP_OID_HEXLEN + 1])
{
	git_blob *blob = NULL;
	uint64_t size;
	if (git_blob_lookup(&blob, repo, id) < 0)
		return tp_hooks_git_fail(TP_EIO, "reading a blob");
	const char *p = git_blob_rawcontent(blob);
	size_t n = (size_t)git_blob_rawsize(blob);
	if (n > POINTER_READ_MAX || !tp_lineage_pointer_parse(p, n, oid, &size))
		tp_sha256_hex_of(p, n, oid);
	git_blob_free(blob);
	return 0;
}

/* path (relative to the current directory) relative to the work tree. */
static int repo_relative(git_repository *repo, const char *path, char **out)
{
	const char *wd = git_repository_workdir(repo);
	char abs[PATH_MAX], top[PATH_MAX];
	if (!wd)
		return tp_error_set(TP_EINVAL, "a bare repository has no paths: name an oid");
	if (!realpath(path, abs))
		return tp_error_set_errno(TP_ENOTFOUND, errno, "%s", path);
	if (!realpath(wd, top))
		return tp_error_set_errno(TP_EIO, errno, "%s", wd);
	size_t n = strlen(top);
	if (strncmp(abs, top, n) != 0 || (abs[n] != '/' && abs[n] != '\0'))
		return tp_error_set(TP_EINVAL, "%s is outside the repository", path);
	*out = strdup(abs[n] == '/' ? abs + n + 1 : abs + n);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

int tp_hooks_report_oid(tp_git_repo *r, const char *path, char oid[TP_OID_HEXLEN + 1])
{
	git_repository *repo = NULL;
	git_object *head = NULL;
	git_tree *root = NULL, *sub = NULL;
	git_tree_entry *e = NULL;
	char *rel = NULL;
	int rc = tp_hooks_git_open(r, &repo);
	if (rc || (rc = repo_relative(repo, path, &rel)) != 0)
		goto done;
	if (git_revparse_single(&head, repo, "HEAD^{tree}") < 0) {
		rc = tp_hooks_git_fail(TP_ENOTFOUND, "HEAD");
		goto done;
	}
	root = (git_tree *)head;
	head = NULL;
	const git_tree *tree = root;
	if (*rel) {
		if (git_tree_entry_bypath(&e, root, rel) < 0) {
			rc = tp_error_set(TP_ENOTFOUND, "%s is not in HEAD", path);
			goto done;
		}
		if (git_tree_entry_type(e) == GIT_OBJECT_BLOB) {
			rc = blob_oid(repo, git_tree_entry_id(e), oid);
			goto done;
		}
		if (git_tree_lookup(&sub, repo, git_tree_entry_id(e)) < 0) {
			rc = tp_hooks_git_fail(TP_EIO, path);
			goto done;
		}
		tree = sub;
	}
	/* A directory: its first weight file (tree entries are sorted). */
	for (size_t i = 0; i < git_tree_entrycount(tree); i++) {
		const git_tree_entry *te = git_tree_entry_byindex(tree, i);
		const char *name = git_tree_entry_name(te);
		size_t n = strlen(name);
		if (git_tree_entry_type(te) == GIT_OBJECT_BLOB && n > 12 &&
		    strcmp(name + n - 12, ".safetensors") == 0) {
			rc = blob_oid(repo, git_tree_entry_id(te), oid);
			goto done;
		}
	}
	rc = tp_error_set(TP_ENOTFOUND, "no *.safetensors file in %s at HEAD", path);
done:
	git_tree_entry_free(e);
	git_tree_free(sub);
	git_tree_free(root);
	git_object_free(head);
	free(rel);
	tp_hooks_git_close(repo);
	return rc;
}

static int sink_add(void *ctx, const void *buf, size_t n)
{
	return tp_buf_add(ctx, buf, n);
}

int tp_hooks_report_load(tp_store *s, const char *oid, char **json)
{
	char key[TP_HOOKS_REPORT_KEY_LEN + 1];
	tp_buf b = TP_BUF_INIT(REPORT_MAX);
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "'%.80s' is not an oid (64 hex digits)", oid);
	tp_hooks_report_key(key, oid);
	tp_store_sink sink = { sink_add, &b };
	int rc = tp_store_get(s, key, 0, UINT64_MAX, &sink);
	if (rc == TP_ENOTFOUND)
		rc = tp_error_set(TP_ENOTFOUND, "no report for %s in %s (a push with "
				  "tenpak.optimize.onpush = report, background or enforce stores one)",
				  oid, tp_store_url(s));
	if (!rc && !b.ptr)
		rc = tp_error_set(TP_ECORRUPT, "%s in %s is empty", key, tp_store_url(s));
	if (rc) {
		tp_buf_free(&b);
		return rc;
	}
	*json = tp_buf_detach(&b);
	return 0;
}

/* Text from a report (it comes from a store) on a terminal: control
 * characters, escape sequences included, are shown as '?'. */
static void put_text(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

static double num(const cJSON *o, const char *key, bool *ok)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*ok = cJSON_IsNumber(v);
	return *ok ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A field of the winner, when the report has it. */
static void winner_field(FILE *f, const cJSON *w, const char *key, const char *fmt)
{
	bool ok;
	double v = num(w, key, &ok);
	if (ok)
		fprintf(f, fmt, v);
}

/* A rejection: a string, or an object with a name and a reason (or a list
 * of them). */
static void print_rejection(FILE *f, const cJSON *x)
{
	if (cJSON_IsString(x)) {
		fputs("    ", f);
		put_text(f, x->valuestring);
		fputc('\n', f);
		return;
	}
	const char *name = str(x, "codec") ? str(x, "codec") : str(x, "name");
	const cJSON *why = cJSON_GetObjectItemCaseSensitive(x, "reason");
	if (!why)
		why = cJSON_GetObjectItemCaseSensitive(x, "reasons");
	fputs("    ", f);
	put_text(f, name ? name : "?");
	fputc(':', f);
	if (cJSON_IsString(why)) {
		fputc(' ', f);
		put_text(f, why->valuestring);
	} else if (cJSON_IsArray(why)) {
		const cJSON *it;
		const char *sep = " ";
		cJSON_ArrayForEach(it, why) if (cJSON_IsString(it))
		{
			fputs(sep, f);
			put_text(f, it->valuestring);
			sep = "; ";
		}
	}
	fputc('\n', f);
}

int tp_hooks_report_print(FILE *f, const char *json, size_t len)
{
	cJSON *doc = cJSON_ParseWithLength(json, len);
	const cJSON *all = doc ? cJSON_GetObjectItemCaseSensitive(doc, "all_candidates") : NULL;
	if (!cJSON_IsObject(doc) || !cJSON_IsArray(all)) {
		cJSON_Delete(doc);
		return tp_error_set(TP_ECORRUPT, "not a tenpak optimize report");
	}
	const cJSON *pushed = cJSON_GetObjectItemCaseSensitive(doc, "pushed");
	if (cJSON_IsObject(pushed) && str(pushed, "commit")) {
		const char *dir = str(pushed, "model_dir");
		fputs("  model ", f);
		put_text(f, dir && *dir ? dir : ".");
		char commit[13];
		snprintf(commit, sizeof(commit), "%s", str(pushed, "commit"));
		fputs(" at commit ", f);
		put_text(f, commit);
		fputc('\n', f);
	}
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(doc, "winner");
	if (cJSON_IsObject(w)) {
		fputs("  winner: ", f);
		put_text(f, str(w, "codec") ? str(w, "codec") : "?");
		winner_field(f, w, "compression", "  %.2fx smaller");
		winner_field(f, w, "ppl_delta", "  dPPL %+.2f%%");
		winner_field(f, w, "latency_p99_ms", "  p99 %.1f ms");
		winner_field(f, w, "throughput_tps", "  %.1f tok/s");
		winner_field(f, w, "cost_per_1m_tokens", "  $%.4f/1M tokens");
		fputc('\n', f);
	} else {
		fprintf(f, "  no candidate meets the constraints\n");
	}
	const cJSON *binding = cJSON_GetObjectItemCaseSensitive(doc, "binding");
	char *bt = cJSON_IsString(binding) ? NULL
		   : cJSON_IsObject(binding) ? cJSON_PrintUnformatted(binding) : NULL;
	if (cJSON_IsString(binding) || bt) {
		fputs("  binding constraint: ", f);
		put_text(f, bt ? bt : binding->valuestring);
		fputc('\n', f);
	}
	free(bt);
	fprintf(f, "  %-14s %6s %9s %9s %8s\n", "candidate", "bpw", "dPPL %", "KL mean", "x smaller");
	const cJSON *c;
	cJSON_ArrayForEach(c, all)
	{
		bool ok1, ok2, ok3, ok4;
		double bpw = num(c, "bpw", &ok1), dppl = num(c, "ppl_delta_pct", &ok2),
		       kl = num(c, "kl_mean", &ok3), comp = num(c, "compression", &ok4);
		const char *codec = str(c, "codec") ? str(c, "codec") : "?";
		fputs("  ", f);
		put_text(f, codec);
		for (size_t k = strlen(codec); k < 14; k++)
			fputc(' ', f);
		if (ok1)
			fprintf(f, " %6.2f", bpw);
		else
			fprintf(f, " %6s", "-");
		if (ok2)
			fprintf(f, " %+9.3f", dppl);
		else
			fprintf(f, " %9s", "-");
		if (ok3)
			fprintf(f, " %9.5f", kl);
		else
			fprintf(f, " %9s", "-");
		if (ok4)
			fprintf(f, " %8.2f", comp);
		fputc('\n', f);
	}
	const cJSON *rej = cJSON_GetObjectItemCaseSensitive(doc, "rejected");
	if (cJSON_IsArray(rej) && cJSON_GetArraySize(rej) > 0) {
		fprintf(f, "  rejected:\n");
		cJSON_ArrayForEach(c, rej) print_rejection(f, c);
	}
	cJSON_Delete(doc);
	return 0;
}
