/*
 * Acting on a push: each changed model is put together in a scratch
 * directory from the pushed commit (weight files linked to the local LFS
 * objects), `tenpak optimize --quick` runs on it as a child process, and
 * its reports land in the git dir and, as JSON, in the store.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hooks_internal.h"

#define BUDGET_DEFAULT "120"
#define REPORT_MAX (64u << 20)
#define BLOB_MAX (256u << 20)
/* background.log past this size is moved to background.log.1 (replacing
 * the older one) before a run appends to it: at most about twice this. */
#define BACKGROUND_LOG_MAX (1u << 20)
/* What `tenpak optimize` exits with when no candidate meets the
 * constraints: a normal outcome, not a failure. */
#define OPTIMIZE_NO_CANDIDATE 3

/* tenpak.optimize.<flag> keys passed on as --<flag> VALUE (the CLI's names). */
static const char *const passed_keys[] = {
	"candidates", "max-tokens", "ctx", "threads", "eval", "calib", "hardware",
	"max-ppl-delta", "max-kl", "min-compression", "max-latency-p99-ms",
	"min-throughput", "max-memory-gb",
};

static const char *const mode_names[] = { "off", "report", "background", "enforce" };

const char *tp_hooks_mode_name(tp_hooks_mode m)
{
	return (unsigned)m < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[m] : "?";
}

int tp_hooks_mode_get(tp_git_repo *r, tp_hooks_mode *out)
{
	char *v = NULL;
	int rc = tp_git_config_get(r, "tenpak.optimize.onpush", &v);
	if (rc == TP_ENOTFOUND) {
		*out = TP_HOOKS_OFF;
		return 0;
	}
	if (rc)
		return rc;
	for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		if (strcmp(v, mode_names[i]) == 0) {
			free(v);
			*out = (tp_hooks_mode)i;
			return 0;
		}
	rc = tp_error_set(TP_ECONFIG, "tenpak.optimize.onpush = '%.64s': use off, report, "
			  "background or enforce", v);
	free(v);
	return rc;
}

/* ---- argv ---- */

typedef struct argv_list {
	char *v[64];
	int n;
} argv_list;

static int argv_add(argv_list *a, const char *s)
{
	if (a->n >= (int)(sizeof(a->v) / sizeof(a->v[0])) - 1)
		return tp_error_set(TP_ETOOBIG, "too many optimizer arguments");
	if (!(a->v[a->n] = strdup(s)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	a->n++;
	return 0;
}

static void argv_clear(argv_list *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->v[i]);
	a->n = 0;
}

/* ---- one model's job ---- */

typedef struct job {
	const tp_hooks_model *m;
	char *out_dir;   /* <common>/tenpak/reports/<commit>/<dir> */
	char *json, *md, *svg, *log;
	char *work;      /* scratch model directory */
	int lock_fd;
} job;

static void job_clear(job *j)
{
	free(j->out_dir);
	free(j->json);
	free(j->md);
	free(j->svg);
	free(j->log);
	free(j->work);
	if (j->lock_fd >= 0)
		close(j->lock_fd);
}

static int job_paths(tp_git_repo *r, const tp_hooks_model *m, int seq, job *j)
{
	tp_buf b = TP_BUF_INIT(1 << 16);
	int rc = tp_buf_addf(&b, "reports/%s%s%s", m->commit, *m->dir ? "/" : "", m->dir);
	if (!rc)
		rc = tp_hooks_state_path(r, b.ptr, &j->out_dir);
	tp_buf_reset(&b);
	if (!rc)
		rc = tp_buf_addf(&b, "work/%ld-%d", (long)getpid(), seq);
	if (!rc)
		rc = tp_hooks_state_path(r, b.ptr, &j->work);
	tp_buf_free(&b);
	if (!rc)
		rc = tp_path_join(&j->json, j->out_dir, "report.json");
	if (!rc)
		rc = tp_path_join(&j->md, j->out_dir, "report.md");
	if (!rc)
		rc = tp_path_join(&j->svg, j->out_dir, "report.svg");
	if (!rc)
		rc = tp_path_join(&j->log, j->out_dir, "optimize.log");
	return rc;
}

/* A model's lock: one run per model (by its first weight file's oid) at a
 * time, across pushes. *busy when another run holds it, unless wait (then
 * this waits for it, saying so on msg). */
static int job_lock(tp_git_repo *r, job *j, bool wait, FILE *msg, bool *busy)
{
	char *dir = NULL, *path = NULL;
	tp_buf name = TP_BUF_INIT(256);
	int rc = tp_hooks_state_path(r, "locks", &dir);
	if (!rc)
		rc = tp_fs_mkdirs(dir);
	if (!rc)
		rc = tp_buf_addf(&name, "%s.lock", j->m->files[0].oid);
	if (!rc)
		rc = tp_path_join(&path, dir, name.ptr);
	if (!rc) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		int got = fd < 0 ? -1 : flock(fd, LOCK_EX | LOCK_NB);
		if (got != 0 && fd >= 0 && errno == EWOULDBLOCK && wait) {
			fprintf(msg, "tenpak: waiting for an earlier push's optimization of %s\n",
				*j->m->dir ? j->m->dir : ".");
			fflush(msg);
			while ((got = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
				;
		}
		if (got == 0) {
			j->lock_fd = fd;
		} else {
			int e = errno;
			if (fd >= 0)
				close(fd);
			if (fd >= 0 && e == EWOULDBLOCK)
				*busy = true;
			else
				rc = tp_error_set_errno(TP_EIO, e, "cannot lock %s", path);
		}
	}
	tp_buf_free(&name);
	free(dir);
	free(path);
	return rc;
}

/* Put the model of j together in j->work: each file of its directory at
 * the pushed commit, weight files as links to the local LFS objects. */
static int materialize(tp_git_repo *r, const job *j)
{
	git_repository *repo = NULL;
	git_commit *commit = NULL;
	git_tree *root = NULL, *sub = NULL;
	git_tree_entry *de = NULL;
	git_oid id;
	int rc = tp_fs_mkdirs(j->work);
	if (rc || (rc = tp_hooks_git_open(r, &repo)) != 0)
		return rc;
	if (git_oid_fromstr(&id, j->m->commit) < 0 || git_commit_lookup(&commit, repo, &id) < 0 ||
	    git_commit_tree(&root, commit) < 0) {
		rc = tp_hooks_git_fail(TP_EIO, "reading the pushed commit");
		goto done;
	}
	git_tree *tree = root;
	if (*j->m->dir) {
		if (git_tree_entry_bypath(&de, root, j->m->dir) < 0 ||
		    git_tree_lookup(&sub, repo, git_tree_entry_id(de)) < 0) {
			rc = tp_hooks_git_fail(TP_EIO, "reading the model's directory");
			goto done;
		}
		tree = sub;
	}
	for (size_t i = 0; i < git_tree_entrycount(tree) && !rc; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(tree, i);
		const char *name = git_tree_entry_name(e);
		char *dst = NULL, *obj = NULL;
		if (git_tree_entry_type(e) != GIT_OBJECT_BLOB ||
		    git_tree_entry_filemode(e) == GIT_FILEMODE_LINK)
			continue;
		if ((rc = tp_path_join(&dst, j->work, name)) != 0)
			break;
		const tp_hooks_file *wf = NULL;
		for (size_t k = 0; k < j->m->nfiles && !wf; k++) {
			const char *base = strrchr(j->m->files[k].path, '/');
			base = base ? base + 1 : j->m->files[k].path;
			if (j->m->files[k].pointer && strcmp(base, name) == 0)
				wf = &j->m->files[k];
		}
		if (wf) {
			if ((rc = tp_git_repo_object_path(r, wf->oid, &obj)) == 0) {
				if (!tp_fs_is_regular(obj))
					rc = tp_error_set(TP_ENOTFOUND, "%s: object %s is not in the local "
							  "LFS storage", wf->path, wf->oid);
				else if (symlink(obj, dst) != 0)
					rc = tp_error_set_errno(TP_EIO, errno, "cannot link %s", dst);
			}
		} else {
			git_blob *blob = NULL;
			if (git_blob_lookup(&blob, repo, git_tree_entry_id(e)) < 0) {
				rc = tp_hooks_git_fail(TP_EIO, "reading a model file");
			} else if ((uint64_t)git_blob_rawsize(blob) > BLOB_MAX) {
				rc = tp_error_set(TP_ETOOBIG, "%s in git is larger than %u bytes", name,
						  BLOB_MAX);
			} else {
				int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
				if (fd < 0)
					rc = tp_error_set_errno(TP_EIO, errno, "cannot create %s", dst);
				else {
					rc = tp_fs_write_all(fd, git_blob_rawcontent(blob),
							     (size_t)git_blob_rawsize(blob));
					close(fd);
				}
			}
			git_blob_free(blob);
		}
		free(dst);
		free(obj);
	}
done:
	git_tree_entry_free(de);
	git_tree_free(sub);
	git_tree_free(root);
	git_commit_free(commit);
	tp_hooks_git_close(repo);
	return rc;
}

/* Remove the scratch directory (its files and links only: it has no
 * subdirectories). */
static void unmaterialize(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

/* The scratch area itself, once no run uses it (others may: then it stays). */
static void rmdir_parent(const char *work)
{
	const char *slash = strrchr(work, '/');
	if (!slash)
		return;
	char *parent = strndup(work, (size_t)(slash - work));
	if (parent)
		rmdir(parent);
	free(parent);
}

/* The optimizer's command line: tenpak optimize DIR --quick --budget N
 * --json --report --plot, and a --flag VALUE for each tenpak.optimize.flag
 * that is set. */
static int optimize_argv(tp_git_repo *r, const char *exe, const job *j, argv_list *a)
{
	char *budget = NULL;
	int rc = tp_git_config_get(r, "tenpak.optimize.budget", &budget);
	if (rc == TP_ENOTFOUND)
		rc = (budget = strdup(BUDGET_DEFAULT)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	uint64_t secs;
	if (!rc && tp_parse_u64(budget, 1, 86400, &secs) != 0)
		rc = tp_error_set(TP_ECONFIG, "tenpak.optimize.budget = '%.32s': seconds, 1 to 86400",
				  budget);
	const char *fixed[] = { exe, "optimize", j->work, "--quick", "--budget", budget,
				"--json", j->json, "--report", j->md, "--plot", j->svg };
	for (size_t i = 0; !rc && i < sizeof(fixed) / sizeof(fixed[0]); i++)
		rc = argv_add(a, fixed[i]);
	for (size_t i = 0; !rc && i < sizeof(passed_keys) / sizeof(passed_keys[0]); i++) {
		char key[64], flag[64], *v = NULL;
		snprintf(key, sizeof(key), "tenpak.optimize.%s", passed_keys[i]);
		snprintf(flag, sizeof(flag), "--%s", passed_keys[i]);
		int grc = tp_git_config_get(r, key, &v);
		if (grc == TP_ENOTFOUND)
			continue;
		rc = grc;
		if (!rc && (rc = argv_add(a, flag)) == 0)
			rc = argv_add(a, v);
		free(v);
	}
	free(budget);
	return rc;
}

/* Run argv with its output in log; *status is its exit code, or 128 + the
 * signal that ended it. */
static int run_logged(argv_list *a, const char *log, int *status)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return tp_error_set_errno(TP_EIO, errno, "cannot create %s", log);
	pid_t pid = fork();
	if (pid < 0) {
		close(fd);
		return tp_error_set_errno(TP_EIO, errno, "cannot start the optimizer");
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0)
			dup2(nul, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(a->v[0], a->v);
		dprintf(2, "tenpak: cannot run %s: %s\n", a->v[0], strerror(errno));
		_exit(127);
	}
	close(fd);
	int ws;
	while (waitpid(pid, &ws, 0) < 0)
		if (errno != EINTR)
			return tp_error_set_errno(TP_EIO, errno, "waiting for the optimizer");
	*status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
	return 0;
}

/* The last non-empty line of the optimizer's log, for messages. */
static void log_tail(const char *log, char *out, size_t cap)
{
	tp_buf b = TP_BUF_INIT(1 << 20);
	out[0] = '\0';
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_size > (off_t)(b.cap - 1))
			lseek(fd, st.st_size - (off_t)(b.cap - 1), SEEK_SET);
		tp_fs_read_fd(fd, log, &b);
		close(fd);
	}
	size_t n = b.len;
	while (n && (b.ptr[n - 1] == '\n' || b.ptr[n - 1] == ' '))
		n--;
	size_t s = n;
	while (s && b.ptr[s - 1] != '\n')
		s--;
	if (n > s)
		snprintf(out, cap, "%.*s", (int)(n - s), b.ptr + s);
	tp_buf_free(&b);
}

typedef struct mem_src {
	const char *p;
	size_t left;
} mem_src;

static int mem_read(void *ctx, void *buf, size_t cap, size_t *got)
{
	mem_src *m = ctx;
	size_t n = m->left < cap ? m->left : cap;
	memcpy(buf, m->p, n);
	m->p += n;
	m->left -= n;
	*got = n;
	return 0;
}

/* Add where the report comes from to the optimizer's JSON, rewrite it, and
 * hand back the text. */
static int annotate(const job *j, const tp_hooks_push *p, char **text)
{
	tp_buf b = TP_BUF_INIT(REPORT_MAX);
	cJSON *doc = NULL;
	int rc = tp_fs_read_regular(j->json, &b);
	if (rc)
		goto done;
	if (!(doc = cJSON_ParseWithLength(b.ptr, b.len)) || !cJSON_IsObject(doc)) {
		rc = tp_error_set(TP_ECORRUPT, "%s is not a JSON object", j->json);
		goto done;
	}
	/* The optimizer saw the scratch directory; readers want the model. */
	cJSON_DeleteItemFromObjectCaseSensitive(doc, "model");
	cJSON_AddStringToObject(doc, "model", *j->m->dir ? j->m->dir : ".");
	cJSON *pushed = cJSON_CreateObject(), *files = cJSON_CreateArray();
	cJSON_AddItemToObject(doc, "pushed", pushed);
	cJSON_AddStringToObject(pushed, "commit", j->m->commit);
	cJSON_AddStringToObject(pushed, "model_dir", j->m->dir);
	cJSON_AddStringToObject(pushed, "remote", p->remote ? p->remote : "");
	cJSON_AddItemToObject(pushed, "files", files);
	for (size_t i = 0; i < j->m->nfiles; i++) {
		cJSON *f = cJSON_CreateObject();
		cJSON_AddItemToArray(files, f);
		cJSON_AddStringToObject(f, "path", j->m->files[i].path);
		cJSON_AddStringToObject(f, "oid", j->m->files[i].oid);
		cJSON_AddNumberToObject(f, "size", (double)j->m->files[i].size);
	}
	char *out = cJSON_PrintUnformatted(doc);
	if (!out) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	int fd = open(j->json, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		rc = tp_error_set_errno(TP_EIO, errno, "cannot rewrite %s", j->json);
	else {
		rc = tp_fs_write_all(fd, out, strlen(out));
		close(fd);
	}
	if (rc)
		free(out);
	else
		*text = out;
done:
	cJSON_Delete(doc);
	tp_buf_free(&b);
	return rc;
}

/* Put the report in the store under each weight file's oid. */
static int store_report(const tp_hooks_push *p, tp_store **store, const job *j,
			const char *text)
{
	int rc = 0;
	if (!*store && (rc = p->open_store(p->store_ctx, store)) != 0)
		return rc;
	for (size_t i = 0; i < j->m->nfiles && !rc; i++) {
		char key[TP_HOOKS_REPORT_KEY_LEN + 1];
		tp_hooks_report_key(key, j->m->files[i].oid);
		mem_src m = { text, strlen(text) };
		tp_store_source src = { mem_read, &m };
		rc = tp_store_put(*store, key, &src);
	}
	return rc;
}

typedef enum { RUN_OK, RUN_NO_CANDIDATE, RUN_FAILED } run_result;

/* One model, start to end; messages on p->msg. A failure is reported
 * there and returned as RUN_FAILED. */
static run_result run_job(tp_git_repo *r, const tp_hooks_push *p, tp_store **store, job *j)
{
	FILE *f = p->msg;
	argv_list a = { 0 };
	char *text = NULL, tail[512];
	int status = -1;
	run_result res = RUN_FAILED;
	const char *shown = *j->m->dir ? j->m->dir : ".";
	fprintf(f, "tenpak: optimizing %s (%zu weight file%s, commit %.12s)\n", shown,
		j->m->nfiles, j->m->nfiles == 1 ? "" : "s", j->m->commit);
	fflush(f);
	int rc = tp_fs_mkdirs(j->out_dir);
	if (!rc)
		rc = materialize(r, j);
	if (!rc)
		rc = optimize_argv(r, p->exe, j, &a);
	if (!rc)
		rc = run_logged(&a, j->log, &status);
	unmaterialize(j->work);
	rmdir_parent(j->work);
	if (rc) {
		fprintf(f, "tenpak: warning: %s: %s\n", shown, tp_error_last());
		goto done;
	}
	if (status != 0 && status != OPTIMIZE_NO_CANDIDATE) {
		log_tail(j->log, tail, sizeof(tail));
		fprintf(f, "tenpak: warning: %s: the optimizer failed (exit %d)%s%s; its output: %s\n",
			shown, status, *tail ? ": " : "", tail, j->log);
		goto done;
	}
	if ((rc = annotate(j, p, &text)) != 0) {
		fprintf(f, "tenpak: warning: %s: %s\n", shown, tp_error_last());
		goto done;
	}
	res = status == 0 ? RUN_OK : RUN_NO_CANDIDATE;
	tp_hooks_report_print(f, text, strlen(text));
	if (status == OPTIMIZE_NO_CANDIDATE) {
		log_tail(j->log, tail, sizeof(tail));
		if (*tail)
			fprintf(f, "  optimizer: %s\n", tail);
	}
	fprintf(f, "  reports: %s/ (report.md, report.svg, report.json)\n", j->out_dir);
	if ((rc = store_report(p, store, j, text)) != 0)
		fprintf(f, "tenpak: warning: %s: report not stored: %s\n", shown, tp_error_last());
	else
		fprintf(f, "  stored:  reports/%s.json%s in %s\n", j->m->files[0].oid,
			j->m->nfiles > 1 ? " (and one per shard)" : "", tp_store_url(*store));
done:
	fflush(f);
	free(text);
	argv_clear(&a);
	return res;
}

/* Run the jobs one after the other; *refuse when enforce must stop the
 * push. */
static void run_jobs(tp_git_repo *r, const tp_hooks_push *p, tp_hooks_mode mode, job *jobs,
		     size_t n, bool *refuse)
{
	tp_store *store = NULL;
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].lock_fd < 0)
			continue;
		run_result res = run_job(r, p, &store, &jobs[i]);
		close(jobs[i].lock_fd);
		jobs[i].lock_fd = -1;
		if (mode != TP_HOOKS_ENFORCE || res == RUN_OK)
			continue;
		*refuse = true;
		const char *shown = *jobs[i].m->dir ? jobs[i].m->dir : ".";
		if (res == RUN_NO_CANDIDATE)
			fprintf(p->msg, "tenpak: push refused: no candidate for %s meets this "
					"repository's constraints (tenpak.optimize.*; see above)\n",
				shown);
		else
			fprintf(p->msg, "tenpak: push refused: %s could not be checked against this "
					"repository's constraints (tenpak.optimize.onpush = enforce)\n",
				shown);
	}
	tp_store_free(store);
}

/* Keep the background log bounded: once it holds BACKGROUND_LOG_MAX
 * bytes, it becomes log.1. */
static int rotate_log(const char *log)
{
	struct stat st;
	if (stat(log, &st) != 0 || st.st_size < (off_t)BACKGROUND_LOG_MAX)
		return 0;
	size_t len = strlen(log) + 3;
	char *old = malloc(len);
	if (!old)
		return tp_error_set(TP_ENOMEM, "out of memory");
	snprintf(old, len, "%s.1", log);
	int rc = 0;
	if (rename(log, old) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "cannot rename %s", log);
	free(old);
	return rc;
}

/* Detach: the parent returns at once, the child runs the jobs with its
 * output in log and exits. */
static int run_background(tp_git_repo *r, const tp_hooks_push *p, job *jobs, size_t n,
			  size_t nrun)
{
	char *log = NULL, *reports = NULL;
	int rc = tp_hooks_state_path(r, "reports/background.log", &log);
	if (!rc)
		rc = tp_hooks_state_path(r, "reports", &reports);
	if (rc) {
		free(log);
		return rc;
	}
	if ((rc = rotate_log(log)) != 0) {
		free(log);
		free(reports);
		return rc;
	}
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "cannot open %s", log);
		free(log);
		free(reports);
		return rc;
	}
	fprintf(p->msg, "tenpak: optimizing %zu model%s in the background; the reports will "
			"appear in %s/<commit>/ (progress: %s)\n",
		nrun, nrun == 1 ? "" : "s", reports, log);
	fflush(p->msg);
	free(reports);
	pid_t pid = fork();
	if (pid < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "cannot start the background run");
		close(fd);
		free(log);
		return rc;
	}
	if (pid > 0) {
		close(fd);
		free(log);
		return 0; /* the locks stay with the child */
	}
	/* The child: out of git's session and off its pipes, so that neither
	 * waits for it. */
	setsid();
	int nul = open("/dev/null", O_RDONLY);
	if (nul >= 0)
		dup2(nul, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	/* git's own pipes (to the remote's receive-pack, its trace) leak into
	 * hooks: a detached run holds none of them, only its locks. */
	long maxfd = sysconf(_SC_OPEN_MAX);
	if (maxfd < 0 || maxfd > 65536)
		maxfd = 65536;
	for (int k = 3; k < (int)maxfd; k++) {
		bool keep = false;
		for (size_t i = 0; i < n && !keep; i++)
			keep = jobs[i].lock_fd == k;
		if (!keep)
			close(k);
	}
	tp_hooks_push bp = *p;
	bp.msg = stderr;
	char when[32] = "";
	time_t now = time(NULL);
	struct tm tm;
	if (gmtime_r(&now, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "tenpak: background run %ld started %s (push to %s)\n", (long)getpid(),
		when, p->remote ? p->remote : "?");
	bool refuse = false;
	run_jobs(r, &bp, TP_HOOKS_BACKGROUND, jobs, n, &refuse);
	fflush(stderr);
	_exit(0);
}

int tp_hooks_pre_push(tp_git_repo *r, const tp_hooks_push *p, const char *text, size_t len,
		      tp_hooks_mode *mode_out)
{
	tp_hooks_ref *refs = NULL;
	tp_hooks_model *models = NULL;
	job *jobs = NULL;
	size_t nrefs = 0, nmodels = 0, nrun = 0;
	tp_hooks_mode mode = TP_HOOKS_OFF;
	int rc = tp_hooks_mode_get(r, &mode);
	*mode_out = mode;
	if (rc || mode == TP_HOOKS_OFF)
		return rc;
	if ((rc = tp_hooks_refs_parse(text, len, &refs, &nrefs)) != 0 ||
	    (rc = tp_hooks_models_find(r, p->remote, refs, nrefs, &models, &nmodels)) != 0 ||
	    nmodels == 0)
		goto done;
	if (!(jobs = calloc(nmodels, sizeof(*jobs)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < nmodels; i++)
		jobs[i].lock_fd = -1;
	for (size_t i = 0; i < nmodels && !rc; i++) {
		jobs[i].m = &models[i];
		if ((rc = job_paths(r, &models[i], (int)i, &jobs[i])) != 0)
			break;
		if (models[i].nfiles == 0)
			continue; /* every weight file of the directory renamed away */
		bool busy = false;
		/* enforce cannot let a model through unchecked: it waits */
		if ((rc = job_lock(r, &jobs[i], mode == TP_HOOKS_ENFORCE, p->msg, &busy)) != 0)
			break;
		if (busy) {
			fprintf(p->msg, "tenpak: %s is being optimized by an earlier push already; "
					"its report will appear in %s/\n",
				*models[i].dir ? models[i].dir : ".", jobs[i].out_dir);
			continue;
		}
		nrun++;
	}
	if (rc || nrun == 0)
		goto done;
	if (mode == TP_HOOKS_BACKGROUND) {
		rc = run_background(r, p, jobs, nmodels, nrun);
		goto done;
	}
	bool refuse = false;
	run_jobs(r, p, mode, jobs, nmodels, &refuse);
	rc = refuse ? 1 : 0;
done:
	for (size_t i = 0; jobs && i < nmodels; i++)
		job_clear(&jobs[i]);
	free(jobs);
	tp_hooks_models_free(models, nmodels);
	free(refs);
	return rc;
}
