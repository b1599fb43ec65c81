/* tenpak store: look inside a store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tp_store.h"

static const char store_help[] =
	"usage: tenpak store stats [--store URL] [--json]\n"
	"\n"
	"stats   count the objects in the store and compare the bytes users\n"
	"        pushed (logical) with the bytes the store holds (physical).\n"
	"\n"
	"  --store URL  the store to read (default: TENPAK_STORE, else git config\n"
	"               tenpak.store, else the per-user default store)\n"
	"  --json       one JSON object on stdout instead of a table\n";

static void print_stats(const char *url, const tp_store_stats *st, bool json)
{
	double saved = st->logical_bytes
		? 1.0 - (double)st->physical_bytes / (double)st->logical_bytes : 0.0;
	if (json) {
		/* The URL is the user's own config: escape the two JSON specials. */
		printf("{\"store\":\"");
		for (const char *p = url; *p; p++)
			printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
		printf("\",\"objects\":%llu,\"logical_bytes\":%llu,\"physical_bytes\":%llu,"
		       "\"savings\":%.4f,\"unreadable\":%llu}\n",
		       (unsigned long long)st->objects, (unsigned long long)st->logical_bytes,
		       (unsigned long long)st->physical_bytes, saved,
		       (unsigned long long)st->unreadable);
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
	if (st->unreadable)
		printf("unreadable:     %llu (run a fsck)\n", (unsigned long long)st->unreadable);
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

int tp_cmd_store(int argc, char **argv)
{
	const char *store_flag = NULL;
	bool json = false;
	int npos = 0;
	tp_cli_opt opts[] = {
		{ "--store", NULL, &store_flag },
		{ "--json", &json, NULL },
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
		return tp_cli_usage_error("store", "missing subcommand (stats)");
	if (strcmp(argv[1], "stats") != 0)
		return tp_cli_usage_error("store", "unknown subcommand '%s'", argv[1]);
	if (npos > 1)
		return tp_cli_usage_error("store", "unexpected argument '%s'", argv[2]);
	return stats(store_flag, json);
}
