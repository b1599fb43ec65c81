/* tenpak store: look inside a store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tp_store.h"
#include "transfer.h"

static const char store_help[] =
	"usage: tenpak store stats [--store URL] [--json]\n"
	"       tenpak store fsck [--store URL] [--sample N] [--json]\n"
	"\n"
	"stats   count the objects in the store and compare the bytes users\n"
	"        pushed (logical) with the bytes the store holds (physical),\n"
	"        for delta objects and whole objects.\n"
	"fsck    rebuild every object (or N chosen at random) from the store\n"
	"        alone and check its sha256 against its oid; problems are listed\n"
	"        by oid and make the exit status 1.\n"
	"\n"
	"  --store URL  the store to read (default: TENPAK_STORE, else git config\n"
	"               tenpak.store, else the per-user default store)\n"
	"  --sample N   fsck: check N objects instead of all\n"
	"  --json       one JSON object on stdout instead of text\n";

static void print_stats(const char *url, const tp_store_stats *st, bool json)
{
	double saved = st->logical_bytes
		? 1.0 - (double)st->physical_bytes / (double)st->logical_bytes : 0.0;
	if (json) {
		/* The URL is the user's own config: escape the two JSON specials. */
		printf("{\"store\":\"");
		tp_cli_json_text(url);
		printf("\",\"objects\":%llu,\"logical_bytes\":%llu,\"physical_bytes\":%llu,"
		       "\"savings\":%.4f,\"unreadable\":%llu,",
		       (unsigned long long)st->objects, (unsigned long long)st->logical_bytes,
		       (unsigned long long)st->physical_bytes, saved,
		       (unsigned long long)st->unreadable);
		const tp_store_kind_stats *ks[2] = { &st->delta, &st->whole };
		for (int i = 0; i < 2; i++)
			printf("\"%s\":{\"objects\":%llu,\"logical_bytes\":%llu,"
			       "\"physical_bytes\":%llu}%s", i ? "whole" : "delta",
			       (unsigned long long)ks[i]->objects,
			       (unsigned long long)ks[i]->logical_bytes,
			       (unsigned long long)ks[i]->physical_bytes, i ? "}\n" : ",");
		return;
	}
	char logical[32], physical[32];
	tp_fmt_bytes(st->logical_bytes, logical, sizeof(logical));
	tp_fmt_bytes(st->physical_bytes, physical, sizeof(physical));
	printf("store:          %s\n", url);
	printf("objects:        %llu\n", (unsigned long long)st->objects);
	printf("logical bytes:  %llu (%s)\n", (unsigned long long)st->logical_bytes, logical);
	printf("physical bytes: %llu (%s)\n", (unsigned long long)st->physical_bytes, physical);
	printf("savings:        %.1f%%\n", 100.0 * saved);
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

static int stats(const char *store_flag, bool json)
{
	tp_lineage_repo *repo = NULL;
	tp_store *store = NULL;
	char *url = NULL;
	tp_store_stats st;
	int rc = tp_lineage_repo_open(&repo);
	if (rc == TP_ENOTFOUND)
		rc = 0;
	if (!rc)
		rc = tp_cli_store_open(repo, store_flag, &store, &url);
	if (!rc)
		rc = tp_store_stats_collect(store, &st);
	if (!rc)
		print_stats(url, &st, json);
	tp_store_free(store);
	tp_lineage_repo_free(repo);
	free(url);
	return rc ? tp_cli_fail("store stats") : TP_EXIT_OK;
}

typedef struct fsck_object {
	char oid[TP_OID_HEXLEN + 1];
} fsck_object;

typedef struct fsck_list {
	fsck_object *v;
	size_t n;
} fsck_list;

static int collect(void *ctx, const char *oid, uint64_t stored)
{
	fsck_list *l = ctx;
	(void)stored;
	fsck_object *v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return tp_error_set(TP_ENOMEM, "out of memory");
	l->v = v;
	memcpy(v[l->n++].oid, oid, TP_OID_HEXLEN + 1);
	return 0;
}

static const char *kind_name(tp_store_kind k)
{
	return k == TP_STORE_KIND_DELTA ? "delta" : k == TP_STORE_KIND_CODEC ? "whole-codec" : "whole-zstd";
}

/* Rebuild one object from the store alone into scratch and verify it. */
static int fsck_one(tp_transfer *t, const char *oid, const char *scratch, tp_transfer_object *o)
{
	int rc = tp_transfer_inspect(t, oid, o);
	if (!rc)
		rc = tp_transfer_download(t, oid, o->size, scratch);
	return rc;
}

static int fsck(const char *store_flag, long sample, bool json)
{
	tp_lineage_repo *repo = NULL;
	tp_store *store = NULL;
	tp_transfer t = { 0 };
	fsck_list l = { 0 };
	char *url = NULL, dir[256], *scratch = NULL;
	const char *tmp = getenv("TMPDIR");
	size_t bad = 0, checked = 0;
	snprintf(dir, sizeof(dir), "%s/tenpak-fsck-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int rc = tp_lineage_repo_open(&repo);
	if (rc == TP_ENOTFOUND)
		rc = 0;
	if (!rc)
		rc = tp_cli_store_open(repo, store_flag, &store, &url);
	if (!rc && !mkdtemp(dir))
		rc = tp_error_set(TP_EIO, "cannot create a scratch directory in %s", dir);
	/* Bases come from the store itself (no repository for local copies);
	 * signature policy comes from the repository's config. */
	if (!rc)
		rc = tp_transfer_init(&t, store, repo, dir);
	t.repo = NULL;
	if (!rc)
		rc = tp_path_join(&scratch, dir, "object");
	if (!rc)
		rc = tp_store_object_list(store, collect, &l);
	if (rc)
		goto done;
	if (sample > 0 && (size_t)sample < l.n) {
		/* A partial Fisher-Yates shuffle picks the sample. */
		srand((unsigned)time(NULL) ^ (unsigned)getpid());
		for (size_t i = 0; i < (size_t)sample; i++) {
			size_t j = i + (size_t)rand() % (l.n - i);
			fsck_object tmpo = l.v[i];
			l.v[i] = l.v[j];
			l.v[j] = tmpo;
		}
		l.n = (size_t)sample;
	}
	if (json) {
		printf("{\"store\":\"");
		tp_cli_json_text(url);
		printf("\",\"objects\":[");
	}
	for (size_t i = 0; i < l.n; i++) {
		tp_transfer_object o = { 0 };
		int orc = fsck_one(&t, l.v[i].oid, scratch, &o);
		checked++;
		bad += orc != 0;
		unlink(scratch);
		if (json) {
			printf("%s{\"oid\":\"%s\",\"kind\":\"%s\",\"depth\":%d,\"signature\":\"%s\"",
			       i ? "," : "", l.v[i].oid, kind_name(o.kind), o.depth,
			       tp_sig_status_name(o.signature));
			if (o.signer[0])
				printf(",\"signer\":\"%s\"", o.signer);
			printf(",\"ok\":%s", orc ? "false" : "true");
			if (orc) {
				printf(",\"error\":\"");
				tp_cli_json_text(tp_error_last());
				printf("\"");
			}
			printf("}");
		} else if (orc) {
			printf("%s: %s\n", l.v[i].oid, tp_error_last());
		} else {
			printf("%s: ok, %s, depth %d, %s%s%s\n", l.v[i].oid, kind_name(o.kind), o.depth,
			       tp_sig_status_name(o.signature), o.signer[0] ? " by " : "", o.signer);
		}
	}
	if (json)
		printf("],\"checked\":%zu,\"ok\":%zu}\n", checked, checked - bad);
	else
		printf("%zu objects checked, %zu ok, %zu with problems\n", checked, checked - bad, bad);
done:
	free(l.v);
	free(scratch);
	rmdir(dir);
	tp_transfer_clear(&t);
	tp_store_free(store);
	tp_lineage_repo_free(repo);
	free(url);
	if (rc)
		return tp_cli_fail("store fsck");
	return bad ? TP_EXIT_FAIL : TP_EXIT_OK;
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
		return tp_cli_usage_error("store", "missing subcommand (stats, fsck)");
	if (npos > 1)
		return tp_cli_usage_error("store", "unexpected argument '%s'", argv[2]);
	if (strcmp(argv[1], "stats") == 0)
		return sample_arg ? tp_cli_usage_error("store", "--sample is for fsck")
				  : stats(store_flag, json);
	if (strcmp(argv[1], "fsck") != 0)
		return tp_cli_usage_error("store", "unknown subcommand '%s'", argv[1]);
	long sample = 0;
	if (sample_arg) {
		char *end;
		sample = strtol(sample_arg, &end, 10);
		if (*end || sample <= 0)
			return tp_cli_usage_error("store", "--sample needs a positive count");
	}
	return fsck(store_flag, sample, json);
}
