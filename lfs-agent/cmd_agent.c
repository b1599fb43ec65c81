/*
 * tenpak agent: git-lfs custom transfer agent, standalone mode.
 *
 * git-lfs writes one JSON request per line on stdin and reads our replies
 * on stdout; stdout carries protocol lines only, logs go to stderr. A failed
 * object is reported on that object and the agent keeps serving.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tp_protocol.h"
#include "tp_store.h"
#include "tp_transfer.h"

static const char agent_help[] =
	"usage: tenpak agent\n"
	"\n"
	"The git-lfs custom transfer agent. git-lfs starts it (see 'tenpak\n"
	"install'); it reads requests on stdin and answers on stdout.\n"
	"\n"
	"The store is TENPAK_STORE if set, else git config tenpak.store of the\n"
	"repository git-lfs runs in, else the per-user default store.\n"
	"\n"
	"TENPAK_TRACE=1 appends a log of each session to\n"
	"<git-common-dir>/tenpak/trace.log (.git/tenpak/trace.log), and\n"
	"TENPAK_TRACE=/abs/file to that file: git-lfs shows an agent's stderr\n"
	"only under GIT_TRACE=1, which also puts this log there.\n";

typedef struct agent {
	tp_proto_reader in;
	tp_buf out;
	tp_proto_op op;
	bool initialized;
	/* The repository, store and transfer are opened at the first object:
	 * git-lfs starts several agents and most get none. A failure is kept
	 * and answers every object. */
	bool opened;
	int open_rc;
	char *open_error;
	tp_store *store;
	tp_git_repo *repo;
	tp_transfer *xfer;
	const char *lfs_tmp; /* downloads are written here; git-lfs renames them */
	/* the object in flight, for progress events */
	const char *oid;
	uint64_t reported;
} agent;

/* Send what is in a->out as one write; a dead git-lfs ends the agent. */
static int send_out(agent *a)
{
	int rc = tp_fs_write_all(STDOUT_FILENO, a->out.ptr, a->out.len);
	tp_buf_reset(&a->out);
	if (rc)
		tp_error_wrap(rc, "writing to git-lfs");
	return rc;
}

static int send_complete_error(agent *a, const char *oid, int code)
{
	tp_log(TP_LOG_ERROR, "%s: %s", oid, tp_error_last());
	int rc = tp_proto_format_complete_error(&a->out, oid, tp_proto_error_code(code),
						tp_error_last());
	return rc ? rc : send_out(a);
}

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
	agent *a = ctx;
	(void)total;
	if (done <= a->reported)
		return 0;
	int rc = tp_proto_format_progress(&a->out, a->oid, done, done - a->reported);
	a->reported = done;
	return rc ? rc : send_out(a);
}

/* Open what transfers need, once per agent, at its first object. */
static int open_lazily(agent *a)
{
	if (a->opened)
		return a->open_rc ? tp_error_set(a->open_rc, "%s", a->open_error ? a->open_error : "")
				  : 0;
	a->opened = true;
	/* Scratch space defaults to <lfs>/tmp, where git-lfs renames downloads. */
	tp_transfer_opts opts = { .progress = on_progress, .progress_ctx = a };
	int rc = tp_git_repo_open(&a->repo);
	if (rc && rc != TP_ENOTFOUND)
		goto done;
	rc = 0;
	if (a->op == TP_PROTO_OP_DOWNLOAD && !a->repo) {
		rc = tp_error_set(TP_ECONFIG, "downloads need a git repository, and none "
				  "was found from the current directory");
		goto done;
	}
	/* A download from a store that does not exist must not create one (a
	 * typo in tenpak.store would leave an empty store behind). */
	rc = a->op == TP_PROTO_OP_DOWNLOAD ? tp_cli_store_open_existing(a->repo, NULL, &a->store, NULL)
					   : tp_cli_store_open(a->repo, NULL, &a->store, NULL);
	if (rc)
		goto done;
	if ((rc = tp_transfer_new(&a->xfer, a->store, a->repo, &opts)) != 0)
		goto done;
	a->lfs_tmp = tp_transfer_tmp_dir(a->xfer);
done:
	if (rc) {
		a->open_rc = rc;
		a->open_error = strdup(tp_error_last());
	}
	return rc;
}

static int init(agent *a, const tp_proto_request *req)
{
	a->op = req->operation;
	a->initialized = true;
	tp_trace("init %s remote=%s concurrent=%d transfers=%d",
		 a->op == TP_PROTO_OP_UPLOAD ? "upload" : "download",
		 req->remote ? req->remote : "-", req->concurrent, req->concurrent_transfers);
	return tp_proto_format_init_ok(&a->out) ? TP_ENOMEM : send_out(a);
}

/* Reply with a full progress and complete: the object needs no transfer. */
static int complete_now(agent *a, const tp_proto_request *req, const char *path)
{
	int rc = 0;
	if (req->size > 0)
		rc = tp_proto_format_progress(&a->out, req->oid, req->size, req->size);
	if (!rc)
		rc = tp_proto_format_complete(&a->out, req->oid, path);
	return rc ? rc : send_out(a);
}

static int upload(agent *a, const tp_proto_request *req)
{
	tp_transfer_result r;
	a->oid = req->oid;
	a->reported = 0;
	int rc = open_lazily(a);
	if (!rc)
		rc = tp_transfer_upload(a->xfer, req->oid, req->size, req->path, &r);
	if (rc)
		return send_complete_error(a, req->oid, rc);
	if (r.skipped) {
		tp_trace("%s: already in the store", req->oid);
		return complete_now(a, req, NULL);
	}
	tp_trace("%s: stored %s, %llu bytes for %llu (%d bases)", req->oid,
		 r.kind == TP_STORE_KIND_WHOLE_ZSTD ? "zstd-compressed" : "by the tensor codec",
		 (unsigned long long)r.stored, (unsigned long long)req->size, r.nbases);
	/* The codec reports progress while it reads; finish the bar. */
	int frc = on_progress(a, req->size, req->size);
	if (!frc)
		frc = tp_proto_format_complete(&a->out, req->oid, NULL);
	return frc ? frc : send_out(a);
}

static int download(agent *a, const tp_proto_request *req)
{
	char *tmp = NULL;
	char name[sizeof("tenpak-") + TP_OID_HEXLEN + sizeof("-XXXXXX")];
	int fd = -1, rc = open_lazily(a);
	if (rc)
		goto fail;
	snprintf(name, sizeof(name), "tenpak-%s-XXXXXX", req->oid);
	if ((rc = tp_path_join(&tmp, a->lfs_tmp, name)) != 0)
		return rc;
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno,
					"creating a file in %s", a->lfs_tmp);
		goto fail;
	}
	a->oid = req->oid;
	a->reported = 0;
	close(fd);
	rc = tp_transfer_download(a->xfer, req->oid, req->size, tmp);
	if (rc)
		goto fail;
	tp_trace("%s: rebuilt into %s", req->oid, tmp);
	rc = tp_proto_format_complete(&a->out, req->oid, tmp);
	free(tmp);
	return rc ? rc : send_out(a);
fail:
	/* Nothing unverified may reach git-lfs. */
	if (fd >= 0)
		unlink(tmp);
	free(tmp);
	return send_complete_error(a, req->oid, rc);
}

/* A request that failed to parse: answer the object if we know which. */
static int reject(agent *a, const tp_proto_request *req, int rc)
{
	bool transfer = req->event == TP_PROTO_EVENT_UPLOAD || req->event == TP_PROTO_EVENT_DOWNLOAD;
	if (transfer && req->oid[0] && a->initialized)
		return send_complete_error(a, req->oid, rc);
	tp_log(TP_LOG_ERROR, "bad request: %s", tp_error_last());
	return rc;
}

static int dispatch(agent *a, const tp_proto_request *req)
{
	if (req->event == TP_PROTO_EVENT_INIT) {
		if (a->initialized)
			return tp_error_set(TP_EPROTO, "a second init request");
		return init(a, req);
	}
	if (!a->initialized)
		return tp_error_set(TP_EPROTO, "a transfer request before init");
	bool up = req->event == TP_PROTO_EVENT_UPLOAD;
	if ((up ? TP_PROTO_OP_UPLOAD : TP_PROTO_OP_DOWNLOAD) != a->op) {
		tp_error_set(TP_EPROTO, "%s request in a %s session", up ? "upload" : "download",
			     up ? "download" : "upload");
		return send_complete_error(a, req->oid, TP_EPROTO);
	}
	return up ? upload(a, req) : download(a, req);
}

static int serve(agent *a)
{
	for (;;) {
		const char *line;
		size_t len;
		tp_proto_request req;
		int rc = tp_proto_reader_next(&a->in, &line, &len);
		if (rc)
			return rc;
		if (!line)
			return 0; /* git-lfs closed stdin */
		if (len == 0)
			continue;
		rc = tp_proto_parse(&req, line, len);
		if (rc == TP_EPROTO) {
			rc = reject(a, &req, rc);
		} else if (rc == 0) {
			if (req.event == TP_PROTO_EVENT_TERMINATE) {
				tp_proto_request_clear(&req);
				return 0;
			}
			rc = dispatch(a, &req);
		}
		tp_proto_request_clear(&req);
		if (rc)
			return rc;
	}
}

/* git-lfs hides our stderr unless GIT_TRACE is set, so TENPAK_TRACE alone
 * must leave its log where the user can find it. Failing to open it costs
 * the log, never the transfer. */
static void trace_setup(void)
{
	if (!tp_log_trace_requested())
		return;
	const char *named = tp_log_trace_file();
	char *dir = NULL, *path = NULL;
	tp_git_repo *repo = NULL;
	int rc = 0;
	if (!named && (rc = tp_git_repo_open(&repo)) == 0 &&
	    (rc = tp_path_join(&dir, tp_git_repo_common_dir(repo), "tenpak")) == 0 &&
	    (rc = tp_fs_mkdirs(dir)) == 0)
		rc = tp_path_join(&path, dir, "trace.log");
	if (!rc)
		rc = tp_log_open_file(named ? named : path);
	if (rc)
		tp_log(TP_LOG_WARN, "no trace log file: %s", tp_error_last());
	free(dir);
	free(path);
	tp_git_repo_free(repo);
}

int tp_cmd_agent(int argc, char **argv)
{
	int npos = 0;
	tp_cli_opt opts[] = { { NULL, NULL, NULL } };
	int prc = tp_cli_parse("agent", argc, argv, opts, &npos);
	if (prc == TP_CLI_HELP) {
		fputs(agent_help, stdout);
		return TP_EXIT_OK;
	}
	if (prc)
		return prc;
	if (npos > 0)
		return tp_cli_usage_error("agent", "unexpected argument '%s'", argv[1]);

	/* A vanished git-lfs shows up as EPIPE from write, and a file-size
	 * limit as EFBIG: both are errors to report, not reasons to die. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	trace_setup();
	agent a = { .out = TP_BUF_INIT(TP_PROTO_LINE_MAX) };
	int rc = tp_proto_reader_init(&a.in, STDIN_FILENO);
	if (!rc)
		rc = serve(&a);
	if (rc)
		fprintf(stderr, "tenpak: agent: %s\n", tp_error_last());
	tp_proto_reader_free(&a.in);
	tp_buf_free(&a.out);
	free(a.open_error);
	tp_transfer_free(a.xfer);
	tp_store_free(a.store);
	tp_git_repo_free(a.repo);
	return rc ? TP_EXIT_FAIL : TP_EXIT_OK;
}
