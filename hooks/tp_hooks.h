/*
 * tenpak hooks: the pre-push hook that benchmarks the models being pushed.
 *
 * Promises:
 * - Install writes <hooks dir>/pre-push (core.hooksPath respected) from the
 *   template hooks/pre-push.in. A pre-push hook that is not tenpak's is
 *   never overwritten: it is moved to pre-push.tenpak-saved and chained
 *   (run first, with the same arguments and ref lines), except git-lfs's
 *   own hook, whose one command tenpak's hook runs itself. Uninstall puts
 *   the saved hook back; a pre-push hook that is not tenpak's is left alone.
 * - The pre-push step reads git's ref lines, finds the safetensors files
 *   added or changed by the commits being pushed (deletions ignored) and,
 *   by tenpak.optimize.onpush, runs `tenpak optimize --quick` on each
 *   changed model as a child process, writes its reports under
 *   <git common dir>/tenpak/reports/<commit>/<model dir>/ and puts the JSON
 *   report in the store as reports/<oid>.json for each weight file.
 * All functions return 0 or a negative TP_E* code and set tp_error_last().
 */
#ifndef TP_HOOKS_H
#define TP_HOOKS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tp_common.h"
#include "tp_git.h"
#include "tp_store.h"

/* ---- install ----------------------------------------------------------- */

typedef struct tp_hooks_install_result {
	char *hook;     /* the pre-push hook's path */
	char *saved;    /* where the hook it replaced was moved; NULL: none */
	bool chained;   /* the saved hook runs before tenpak's */
	bool updated;   /* tenpak's hook was there already and was rewritten */
} tp_hooks_install_result;

/* Install the pre-push hook in r, running exe (tenpak's absolute path). */
int tp_hooks_install(tp_git_repo *r, const char *exe, tp_hooks_install_result *out);

typedef struct tp_hooks_uninstall_result {
	char *hook;     /* the pre-push hook's path */
	bool removed;   /* tenpak's hook was there and is gone */
	bool restored;  /* the saved hook is back as pre-push */
	bool foreign;   /* pre-push is not tenpak's: left as it is */
} tp_hooks_uninstall_result;

int tp_hooks_uninstall(tp_git_repo *r, tp_hooks_uninstall_result *out);

void tp_hooks_install_result_clear(tp_hooks_install_result *res);
void tp_hooks_uninstall_result_clear(tp_hooks_uninstall_result *res);

/* The directory git runs r's hooks from: core.hooksPath (relative to the
 * work tree, ~/ expanded) or <git common dir>/hooks. */
int tp_hooks_dir(tp_git_repo *r, char **out);

/* ---- what a push carries ----------------------------------------------- */

/* One line of git's pre-push input. */
typedef struct tp_hooks_ref {
	char local_ref[256], local_oid[65], remote_ref[256], remote_oid[65];
} tp_hooks_ref;

/* Parse the ref lines of a pre-push hook (text, len bytes). A malformed
 * line is TP_EINVAL. *out is malloc'd (NULL when there are no lines). */
int tp_hooks_refs_parse(const char *text, size_t len, tp_hooks_ref **out, size_t *n);

/* One weight file of a model at the pushed commit. */
typedef struct tp_hooks_file {
	char *path;            /* in the repository: "models/base/model.safetensors" */
	char oid[TP_OID_HEXLEN + 1]; /* its LFS oid (sha256 of the content) */
	uint64_t size;
	bool pointer;          /* stored in git as an LFS pointer */
} tp_hooks_file;

/* A model directory with at least one weight file added or changed by the
 * push. Its files are all the *.safetensors of that directory at commit
 * (every shard of a sharded model, not only the changed ones). */
typedef struct tp_hooks_model {
	char commit[65];       /* the pushed commit (hex) */
	char *dir;             /* "models/base", "" at the top */
	tp_hooks_file *files;
	size_t nfiles;
} tp_hooks_model;

/* The models a push of refs to remote (git's REMOTE argument: a remote's
 * name or a URL) adds or changes. For an updated branch the remote's
 * commit is compared with the local one; for a new branch, its merge base
 * with the remote's branches (its remote-tracking refs), or nothing when
 * there is none. Deleted refs and deleted files are ignored; a model
 * reached by several refs appears once. */
int tp_hooks_models_find(tp_git_repo *r, const char *remote, const tp_hooks_ref *refs,
			 size_t nrefs, tp_hooks_model **out, size_t *n);
void tp_hooks_models_free(tp_hooks_model *m, size_t n);

/* ---- acting on a push -------------------------------------------------- */

typedef enum {
	TP_HOOKS_OFF = 0,
	TP_HOOKS_REPORT,
	TP_HOOKS_BACKGROUND,
	TP_HOOKS_ENFORCE,
} tp_hooks_mode;

/* tenpak.optimize.onpush: unset is TP_HOOKS_OFF; an unknown value is
 * TP_ECONFIG. */
int tp_hooks_mode_get(tp_git_repo *r, tp_hooks_mode *out);
const char *tp_hooks_mode_name(tp_hooks_mode m);

/* Opens the store reports go to (the caller knows where objects go). */
typedef int (*tp_hooks_store_fn)(void *ctx, tp_store **out);

typedef struct tp_hooks_push {
	const char *exe;    /* the tenpak that runs `optimize` */
	const char *remote; /* git's arguments to the hook */
	const char *url;
	tp_hooks_store_fn open_store;
	void *store_ctx;
	FILE *msg;          /* where the summary and warnings go (stderr) */
} tp_hooks_push;

/* Act on a push (ref lines in text) by the repository's mode. Returns 0
 * when the push may go on, 1 when enforce refuses it (the reason printed),
 * or a negative TP_E* code when the hook itself failed (the caller decides,
 * by mode, whether that stops the push). */
int tp_hooks_pre_push(tp_git_repo *r, const tp_hooks_push *p, const char *text, size_t len,
		      tp_hooks_mode *mode);

/* ---- stored reports ---------------------------------------------------- */

/* "reports/<oid>.json". out has room for it. */
#define TP_HOOKS_REPORT_KEY_LEN (sizeof("reports/.json") - 1 + TP_OID_HEXLEN)
void tp_hooks_report_key(char out[TP_HOOKS_REPORT_KEY_LEN + 1], const char *oid);

/* The oid whose report PATH names: a weight file, or a model directory
 * (its first *.safetensors in name order), looked up in HEAD's tree of r.
 * path is relative to the current directory. */
int tp_hooks_report_oid(tp_git_repo *r, const char *path, char oid[TP_OID_HEXLEN + 1]);

/* The JSON report stored for oid (malloc'd text); TP_ENOTFOUND when the
 * store has none. */
int tp_hooks_report_load(tp_store *s, const char *oid, char **json);

/* A short text summary of a JSON report (the winner, or why none; one
 * line per candidate) on f; TP_ECORRUPT when json is not a report. */
int tp_hooks_report_print(FILE *f, const char *json, size_t len);

#endif
