/* tenpak store: look inside a store. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "tp_array.h"
#include "tp_store.h"
#include "tp_transfer.h"

static const char store_help[] =
	"usage: tenpak store stats [--store URL] [--json]\n"
	"       tenpak store fsck [--store URL] [--sample N] [--json]\n"
	"       tenpak store show OID [--store URL] [--json]\n"
	"\n"
	"stats   count the objects in the store and compare the bytes users\n"
	"        pushed (logical) with the bytes the store holds (physical),\n"
	"        for delta objects and whole objects.\n"
	"fsck    rebuild every object (or N chosen at random) from the store\n"
	"        alone (never from local LFS objects or the Hugging Face cache)\n"
	"        and check its sha256 against its oid; problems are listed by oid\n"
	"        and make the exit status 1.\n"
	"show    what the store holds for one object: its kind, size, stored size,\n"
	"        codec version, chain depth, signature, why its base was chosen, and\n"
	"        the chain of bases it is rebuilt from. Exit status 1 when the\n"
	"        object or a base is missing or unreadable.\n"
	"\n"
	"These commands only read: a store that does not exist is an error.\n"
	"\n"
	"  --store URL  the store to read (default: TENPAK_STORE, else git config\n"
	"               tenpak.store, else the per-user default store)\n"
	"  --sample N   fsck: check N objects instead of all\n"
	"  --json       one JSON object on stdout instead of text\n";

static double savings(uint64_t logical, uint64_t physical)
{
	/* Four decimals: a ratio, not a measurement to 17 digits. */
	return logical ? round((1.0 - (double)physical / (double)logical) * 1e4) / 1e4 : 0.0;
}

static cJSON *stats_json(const char *url, const tp_store_stats *st)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "store", url);
	cJSON_AddNumberToObject(o, "objects", (double)st->objects);
	cJSON_AddNumberToObject(o, "logical_bytes", (double)st->logical_bytes);
	cJSON_AddNumberToObject(o, "physical_bytes", (double)st->physical_bytes);
	cJSON_AddNumberToObject(o, "savings", savings(st->logical_bytes, st->physical_bytes));
	cJSON_AddNumberToObject(o, "unreadable", (double)st->unreadable);
	const tp_store_kind_stats *ks[2] = { &st->delta, &st->whole };
	for (int i = 0; i < 2; i++) {
		cJSON *k = cJSON_AddObjectToObject(o, i ? "whole" : "delta");
		cJSON_AddNumberToObject(k, "objects", (double)ks[i]->objects);
		cJSON_AddNumberToObject(k, "logical_bytes", (double)ks[i]->logical_bytes);
		cJSON_AddNumberToObject(k, "physical_bytes", (double)ks[i]->physical_bytes);
	}
	return o;
}

static void print_stats(const char *url, const tp_store_stats *st)
{
	char logical[32], physical[32];
	tp_fmt_bytes(st->logical_bytes, logical, sizeof(logical));
	tp_fmt_bytes(st->physical_bytes, physical, sizeof(physical));
	printf("store:          %s\n", url);
	printf("objects:        %llu\n", (unsigned long long)st->objects);
	printf("logical bytes:  %llu (%s)\n", (unsigned long long)st->logical_bytes, logical);
	printf("physical bytes: %llu (%s)\n", (unsigned long long)st->physical_bytes, physical);
	printf("savings:        %.1f%%\n", 100.0 * savings(st->logical_bytes, st->physical_bytes));
	const tp_store_kind_stats *ks[2] = { &st->delta, &st->whole };
	for (int i = 0; i < 2; i++) {
		tp_fmt_bytes(ks[i]->logical_bytes, logical, sizeof(logical));
		tp_fmt_bytes(ks[i]->physical_bytes, physical, sizeof(physical));
		printf("  %-6s        %llu objects, %s stored as %s\n", i ? "whole" : "delta",
		       (unsigned long long)ks[i]->objects, logical, physical);
	}
	if (st->unreadable)
		printf("unreadable:     %llu (run 'tenpak store fsck')\n",
		       (unsigned long long)st->unreadable);
}

/* What every subcommand works with: the repository (if any) for config,
 * the store, which must exist, for fsck a transfer (rebuilds, signature
 * policy) and for show the signature policy. */
typedef struct session {
	tp_git_repo *repo;
	tp_store *store;
	char *url;
	tp_transfer *t;
	tp_provenance *provenance;
} session;

static int session_open(session *s, const char *store_flag)
{
	memset(s, 0, sizeof(*s));
	int rc = tp_git_repo_open(&s->repo);
	if (rc == TP_ENOTFOUND)
		rc = 0;
	return rc ? rc : tp_cli_store_open_existing(s->repo, store_flag, &s->store, &s->url);
}

/* Returns code, the exit status, after a failure message when rc != 0. */
static int session_close(session *s, int rc, const char *cmd, int code)
{
	tp_transfer_free(s->t);
	tp_provenance_free(s->provenance);
	tp_store_free(s->store);
	tp_git_repo_free(s->repo);
	free(s->url);
	return rc ? tp_cli_fail(cmd) : code;
}

static int stats(const char *store_flag, bool json)
{
	session ss;
	tp_store_stats st;
	int rc = session_open(&ss, store_flag);
	if (!rc)
		rc = tp_store_stats_collect(ss.store, &st);
	if (!rc && json)
		rc = tp_cli_json_print(stats_json(ss.url, &st));
	else if (!rc)
		print_stats(ss.url, &st);
	return session_close(&ss, rc, "store stats", TP_EXIT_OK);
}

typedef struct fsck_object {
	char oid[TP_OID_HEXLEN + 1];
} fsck_object;

/* The store's listing sets the length: 64M oids (4 GiB of them) is far
 * past any real store and still a limit on a listing that never ends. */
#define FSCK_OBJECTS_MAX ((size_t)1 << 26)

typedef tp_array(fsck_object) fsck_list;

static int collect(void *ctx, const char *oid, uint64_t stored)
{
	fsck_list *l = ctx;
	fsck_object o;
	(void)stored;
	memcpy(o.oid, oid, TP_OID_HEXLEN + 1);
	int rc = tp_array_push(l, o);
	return rc ? tp_error_wrap(rc, "listing the objects to check") : 0;
}

/* Rebuild one object from the store alone into scratch and verify it. */
static int fsck_one(tp_transfer *t, const char *oid, const char *scratch, tp_transfer_object *o)
{
	int rc = tp_transfer_inspect(t, oid, o);
	if (!rc)
		rc = tp_transfer_download(t, oid, o->size, scratch);
	return rc;
}

static int fsck(const char *store_flag, uint64_t sample, bool json)
{
	session ss;
	fsck_list l = TP_ARRAY_INIT(FSCK_OBJECTS_MAX);
	cJSON *doc = NULL, *objects = NULL;
	char dir[256], *scratch = NULL;
	const char *tmp = getenv("TMPDIR");
	size_t bad = 0, checked = 0;
	snprintf(dir, sizeof(dir), "%s/tenpak-fsck-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int rc = session_open(&ss, store_flag);
	if (!rc && !mkdtemp(dir))
		rc = tp_error_set(TP_EIO, "cannot create a scratch directory in %s", dir);
	/* Bases come from the store itself, never from local copies: fsck
	 * vouches for the store. Signature policy comes from the repository's
	 * config. */
	tp_transfer_opts opts = { .tmp_dir = dir, .store_only = true };
	if (!rc)
		rc = tp_transfer_new(&ss.t, ss.store, ss.repo, &opts);
	if (!rc)
		rc = tp_path_join(&scratch, dir, "object");
	if (!rc)
		rc = tp_store_object_list(ss.store, collect, &l);
	if (rc)
		goto done;
	if (sample > 0 && sample < l.len) {
		/* A partial Fisher-Yates shuffle picks the sample. */
		srand((unsigned)time(NULL) ^ (unsigned)getpid());
		for (size_t i = 0; i < (size_t)sample; i++) {
			size_t j = i + (size_t)rand() % (l.len - i);
			fsck_object tmpo = l.ptr[i];
			l.ptr[i] = l.ptr[j];
			l.ptr[j] = tmpo;
		}
		l.len = (size_t)sample;
	}
	if (json) {
		doc = cJSON_CreateObject();
		cJSON_AddStringToObject(doc, "store", ss.url);
		objects = cJSON_AddArrayToObject(doc, "objects");
	}
	for (size_t i = 0; i < l.len; i++) {
		tp_transfer_object o = { 0 };
		int orc = fsck_one(ss.t, l.ptr[i].oid, scratch, &o);
		checked++;
		bad += orc != 0;
		unlink(scratch);
		if (json) {
			cJSON *e = cJSON_CreateObject();
			cJSON_AddStringToObject(e, "oid", l.ptr[i].oid);
			cJSON_AddStringToObject(e, "kind", tp_store_kind_name(o.kind));
			cJSON_AddNumberToObject(e, "depth", o.depth);
			cJSON_AddStringToObject(e, "signature", tp_provenance_sig_name(o.signature));
			if (o.signer[0])
				cJSON_AddStringToObject(e, "signer", o.signer);
			cJSON_AddBoolToObject(e, "ok", orc == 0);
			if (orc)
				cJSON_AddStringToObject(e, "error", tp_error_last());
			cJSON_AddItemToArray(objects, e);
		} else if (orc) {
			printf("%s: %s\n", l.ptr[i].oid, tp_error_last());
		} else {
			printf("%s: ok, %s, depth %d, %s%s%s\n", l.ptr[i].oid, tp_store_kind_name(o.kind),
			       o.depth, tp_provenance_sig_name(o.signature), o.signer[0] ? " by " : "",
			       o.signer);
		}
	}
	if (json) {
		cJSON_AddNumberToObject(doc, "checked", (double)checked);
		cJSON_AddNumberToObject(doc, "ok", (double)(checked - bad));
		rc = tp_cli_json_print(doc);
		doc = NULL;
	} else {
		printf("%zu objects checked, %zu ok, %zu with problems\n", checked, checked - bad, bad);
	}
done:
	cJSON_Delete(doc);
	tp_array_clear(&l);
	free(scratch);
	rmdir(dir);
	return session_close(&ss, rc, "store fsck", bad ? TP_EXIT_FAIL : TP_EXIT_OK);
}

/* ---- show ------------------------------------------------------------------ */

/* Objects a chain shows at most: a sharded base of a sharded base can
 * fan out, and a hostile store can make chains of any shape. */
#define SHOW_NODES_MAX 256

typedef struct chain_walk {
	tp_store *store;
	const tp_provenance *provenance;
	char (*seen)[TP_OID_HEXLEN + 1];
	size_t nseen;
	uint64_t stored; /* stored bytes of every distinct object of the chain */
	bool incomplete; /* some object is missing or unreadable */
	bool truncated;
} chain_walk;

static bool chain_seen(const chain_walk *w, const char *oid)
{
	for (size_t i = 0; i < w->nseen; i++)
		if (strcmp(w->seen[i], oid) == 0)
			return true;
	return false;
}

/* n (holding "oid") gets what the store says of that object and, through
 * its manifest's "bases", the same for every base, level by level. */
static void chain_fill(chain_walk *w, cJSON *n, int level)
{
	const char *oid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "oid"));
	const cJSON *want = cJSON_GetObjectItemCaseSensitive(n, "size");
	if (chain_seen(w, oid)) {
		cJSON_AddBoolToObject(n, "repeated", true);
		return;
	}
	if (w->nseen >= SHOW_NODES_MAX || level > TP_TRANSFER_CHAIN_LIMIT) {
		cJSON_AddBoolToObject(n, "truncated", true);
		w->truncated = true;
		return;
	}
	memcpy(w->seen[w->nseen++], oid, TP_OID_HEXLEN + 1);
	tp_cli_stored st;
	if (tp_cli_stored_load(w->store, oid, &st) != 0) {
		cJSON_AddStringToObject(n, "error", tp_error_last());
		w->incomplete = true;
		return;
	}
	w->stored += st.info.stored_size;
	/* A base entry already holds the size its delta expects. */
	if (want && (uint64_t)want->valuedouble != st.info.size) {
		cJSON_AddStringToObject(n, "error", "the stored object's size is not the size "
					"the delta expects");
		w->incomplete = true;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(n, "size");
	tp_cli_stored_json(n, &st);
	if (st.manifest) {
		tp_provenance_sig sig = tp_provenance_manifest_status(w->provenance, st.manifest);
		cJSON_AddStringToObject(n, "signature", tp_provenance_sig_name(sig));
		if (st.manifest->signer)
			cJSON_AddStringToObject(n, "signer", st.manifest->signer);
	}
	tp_cli_stored_clear(&st);
	cJSON *b;
	cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(n, "bases"))
		chain_fill(w, b, level + 1);
}

static const char *json_text(const cJSON *o, const char *key)
{
	const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
	return v ? v : "";
}

static uint64_t json_u64(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble : 0;
}

/* One line per base, indented by level. */
static void print_chain(const cJSON *n, int level)
{
	const cJSON *b;
	cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(n, "bases")) {
		printf("%*s%s", 2 + 2 * level, "", json_text(b, "oid"));
		if (*json_text(b, "path"))
			printf(" (%s)", json_text(b, "path"));
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "repeated")))
			printf(": shown above\n");
		else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "truncated")))
			printf(": not shown (more than %d objects or levels)\n", SHOW_NODES_MAX);
		else if (*json_text(b, "error") && !*json_text(b, "kind"))
			printf(": %s\n", json_text(b, "error"));
		else
			printf(": %s, %llu bytes, %llu stored, depth %llu%s%s\n", json_text(b, "kind"),
			       (unsigned long long)json_u64(b, "size"),
			       (unsigned long long)json_u64(b, "stored_bytes"),
			       (unsigned long long)json_u64(b, "depth"),
			       *json_text(b, "error") ? ": " : "", json_text(b, "error"));
		print_chain(b, level + 1);
	}
}

static void print_show(const cJSON *n)
{
	char size[32], stored[32];
	uint64_t sz = json_u64(n, "size"), st = json_u64(n, "stored_bytes");
	tp_fmt_bytes(sz, size, sizeof(size));
	tp_fmt_bytes(st, stored, sizeof(stored));
	printf("object:     %s\n", json_text(n, "oid"));
	printf("store:      %s\n", json_text(n, "store"));
	printf("kind:       %s", json_text(n, "kind"));
	if (cJSON_GetObjectItemCaseSensitive(n, "codec_version"))
		printf(", codec version %llu", (unsigned long long)json_u64(n, "codec_version"));
	printf("\nsize:       %llu bytes (%s)\n", (unsigned long long)sz, size);
	printf("stored:     %llu bytes (%s), %.1f%% of the size\n", (unsigned long long)st, stored,
	       sz ? 100.0 * (double)st / (double)sz : 0.0);
	printf("depth:      %llu\n", (unsigned long long)json_u64(n, "depth"));
	printf("signature:  %s%s%s\n", *json_text(n, "signature") ? json_text(n, "signature")
								  : "none (no manifest)",
	       *json_text(n, "signer") ? " by " : "", json_text(n, "signer"));
	static const char *const why[] = { "source", "evidence", "reason" };
	for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++)
		if (*json_text(n, why[i]))
			printf("%s:%*s%s\n", why[i], (int)(11 - strlen(why[i])), "",
			       json_text(n, why[i]));
	if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(n, "bases")) > 0) {
		printf("bases:\n");
		print_chain(n, 0);
	}
	const cJSON *chain = cJSON_GetObjectItemCaseSensitive(n, "chain");
	tp_fmt_bytes(json_u64(chain, "stored_bytes"), stored, sizeof(stored));
	printf("chain:      %llu objects, %llu bytes (%s) stored to rebuild it%s\n",
	       (unsigned long long)json_u64(chain, "objects"),
	       (unsigned long long)json_u64(chain, "stored_bytes"), stored,
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(chain, "complete"))
		       ? "" : "; INCOMPLETE: a base is missing or unreadable");
}

static int show(const char *store_flag, const char *oid, bool json)
{
	session ss;
	cJSON *doc = cJSON_CreateObject();
	tp_store_object_info info;
	int rc = session_open(&ss, store_flag);
	chain_walk w = { ss.store, NULL, NULL, 0, 0, false, false };
	/* Signatures are judged by tenpak.trustedkeys. */
	if (!rc)
		rc = tp_provenance_new(&ss.provenance, ss.repo);
	w.provenance = ss.provenance;
	if (!rc && !(w.seen = calloc(SHOW_NODES_MAX, sizeof(*w.seen))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	/* An absent object is an error of the command, not a line of output. */
	if (!rc && (rc = tp_store_object_stat(ss.store, oid, &info)) == TP_ENOTFOUND)
		rc = tp_store_object_absent(ss.store, oid);
	if (rc || !doc) {
		rc = rc ? rc : tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	cJSON_AddStringToObject(doc, "oid", oid);
	cJSON_AddStringToObject(doc, "store", ss.url);
	chain_fill(&w, doc, 0);
	const char *err = json_text(doc, "error");
	if (*err && !*json_text(doc, "kind")) {
		rc = tp_error_set(TP_ECORRUPT, "%s", err);
		goto done;
	}
	cJSON *chain = cJSON_AddObjectToObject(doc, "chain");
	cJSON_AddNumberToObject(chain, "objects", (double)w.nseen);
	cJSON_AddNumberToObject(chain, "stored_bytes", (double)w.stored);
	cJSON_AddBoolToObject(chain, "complete", !w.incomplete && !w.truncated);
	if (json) {
		rc = tp_cli_json_print(doc);
		doc = NULL;
	} else {
		print_show(doc);
	}
done:
	cJSON_Delete(doc);
	free(w.seen);
	return session_close(&ss, rc, "store show", w.incomplete ? TP_EXIT_FAIL : TP_EXIT_OK);
}

int tp_cmd_store(int argc, char **argv)
{
	const char *store_flag = NULL, *sample_arg = NULL;
	bool json = false;
	int npos = 0;
	tp_cli_opt opts[] = {
		{ "--store", NULL, &store_flag },
		{ "--json", &json, NULL },
		{ "--sample", NULL, &sample_arg },
		{ NULL, NULL, NULL },
	};
	int rc = tp_cli_parse("store", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(store_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	if (npos == 0)
		return tp_cli_usage_error("store", "missing subcommand (stats, fsck, show)");
	const char *sub = argv[1];
	bool is_show = strcmp(sub, "show") == 0;
	if (strcmp(sub, "stats") != 0 && strcmp(sub, "fsck") != 0 && !is_show)
		return tp_cli_usage_error("store", "unknown subcommand '%s'", sub);
	if (sample_arg && strcmp(sub, "fsck") != 0)
		return tp_cli_usage_error("store", "--sample is for fsck");
	if (is_show) {
		if (npos != 2)
			return tp_cli_usage_error("store", npos < 2 ? "show needs an OID"
								    : "show takes one OID");
		if (!tp_oid_valid(argv[2]))
			return tp_cli_usage_error("store", "'%s' is not an oid (64 lowercase hex "
						  "digits)", argv[2]);
		return show(store_flag, argv[2], json);
	}
	if (npos > 1)
		return tp_cli_usage_error("store", "unexpected argument '%s'", argv[2]);
	if (strcmp(sub, "stats") == 0)
		return stats(store_flag, json);
	uint64_t sample = 0; /* all */
	if (sample_arg && tp_parse_u64(sample_arg, 1, UINT64_MAX, &sample) < 0)
		return tp_cli_usage_error("store", "--sample needs a positive count");
	return fsck(store_flag, sample, json);
}
