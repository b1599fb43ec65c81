/* The tenpak executable's commands. Each returns the process exit code. */
#ifndef TP_CLI_H
#define TP_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "tp_common.h"
#include "tp_lineage.h"
#include "tp_store.h"

enum { TP_EXIT_OK = 0, TP_EXIT_FAIL = 1, TP_EXIT_USAGE = 2 };

int tp_cmd_agent(int argc, char **argv);
int tp_cmd_install(int argc, char **argv);
int tp_cmd_uninstall(int argc, char **argv);
int tp_cmd_store(int argc, char **argv);
int tp_cmd_delta(int argc, char **argv);
int tp_cmd_lineage(int argc, char **argv);
int tp_cmd_eval(int argc, char **argv);
int tp_cmd_optimize(int argc, char **argv);
int tp_cmd_key(int argc, char **argv);
int tp_cmd_hooks(int argc, char **argv);
int tp_cmd_hook(int argc, char **argv);
int tp_cmd_report(int argc, char **argv);
/* The pre-push hook of the repository at the current directory, installed
 * or removed with a message on stdout (cmd_hooks.c; install --hooks). */
int tp_cli_hooks_install(void);
int tp_cli_hooks_uninstall(void);

/* "tenpak: <cmd>: <message>" on stderr; returns TP_EXIT_USAGE. */
int tp_cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "tenpak: <cmd>: <tp_error_last()>" on stderr; returns TP_EXIT_FAIL. */
int tp_cli_fail(const char *cmd);
/* True for -h / --help. */
bool tp_cli_is_help(const char *arg);

/* Print a JSON document (cJSON) on stdout on one line and free it. */
typedef struct cJSON cJSON;
int tp_cli_json_print(cJSON *doc);

/* One command-line option: a flag (value == NULL) or an option with a
 * value ("--name VALUE" or "--name=VALUE"). */
typedef struct tp_cli_opt {
	const char *name; /* "--store" */
	bool *flag;       /* set to true when seen (flags) */
	const char **value;
} tp_cli_opt;

/* A repeatable option with a value ("--base A --base=B"): every value is
 * kept, in order; more than max of them is a usage error. */
typedef struct tp_cli_list {
	const char *name;
	const char **values; /* room for max */
	size_t max;
	size_t count;        /* set by the parser */
} tp_cli_list;

enum { TP_CLI_PARSED = 0, TP_CLI_HELP = -1 };

/* Parse argv[1..argc) against opts (terminated by a zero entry). Positional
 * arguments are moved, in order, to argv[1..*npos]. Returns TP_CLI_PARSED,
 * TP_CLI_HELP for -h/--help, or TP_EXIT_USAGE after printing why. "--"
 * ends options. cmd names the command in messages ("delta compress"). */
int tp_cli_parse(const char *cmd, int argc, char **argv, const tp_cli_opt *opts, int *npos);
/* The same with repeatable options too: lists is terminated by a zero entry
 * (NULL: none); each count starts at 0. */
int tp_cli_parse_lists(const char *cmd, int argc, char **argv, const tp_cli_opt *opts,
		       tp_cli_list *lists, int *npos);

/* An optional option's number (s may be NULL: *out untouched) into *out;
 * false when it is not a number in [min, max]. */
bool tp_cli_parse_size(const char *s, uint64_t min, uint64_t max, size_t *out);
/* Read the file (or pipe) at path into text (its cap applies). */
int tp_cli_read_text(const char *path, tp_buf *text);
/* The running tenpak's own path (malloc'd), for what it installs. */
int tp_cli_self_path(char **out);

/* Where objects go: --store flag, else TENPAK_STORE, else tenpak.store from
 * git config (repo may be NULL), else the per-user default. *source says
 * which, for messages. */
int tp_cli_store_url(tp_git_repo *repo, const char *flag, char **url,
		     const char **source);

/* Resolve the store URL as tp_cli_store_url does and open it; backend
 * settings come from git config "tenpak.<key>" (e.g. tenpak.s3.endpoint).
 * *url (may be NULL) gets the URL for messages. */
int tp_cli_store_open(tp_git_repo *repo, const char *flag, tp_store **store, char **url);
/* The same for commands that only read: a store that does not exist is
 * TP_ENOTFOUND, with a message saying how to make one, and nothing is
 * created. */
int tp_cli_store_open_existing(tp_git_repo *repo, const char *flag, tp_store **store,
			       char **url);

/* What the store holds for one oid, for display: its header and, for kinds
 * 2 and 3, its parsed manifest (signatures are not checked here). */
typedef struct tp_cli_stored {
	tp_store_object_info info;
	tp_store_manifest *manifest; /* NULL for a whole zstd object */
} tp_cli_stored;

/* TP_ENOTFOUND, with a message naming the store, when oid is absent;
 * TP_ECORRUPT when its manifest is unreadable or describes another object. */
int tp_cli_stored_load(tp_store *s, const char *oid, tp_cli_stored *out);
void tp_cli_stored_clear(tp_cli_stored *st);
/* Add st's fields to obj: kind, size, stored_bytes and, from a manifest,
 * codec_version, depth, bases [{oid, size, path}], source, evidence and
 * reason (why this base). */
void tp_cli_stored_json(cJSON *obj, const tp_cli_stored *st);

#endif
