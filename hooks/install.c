/*
 * Installing and removing the pre-push hook, and the libgit2 handle the
 * rest of hooks/ shares.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hooks_internal.h"

/* hooks/pre-push.in, compiled in by embed_hook.cmake. */
extern const char tp_hooks_template[];
extern const size_t tp_hooks_template_len;

/* The line that marks a pre-push hook as tenpak's. */
#define MARK "# tenpak pre-push hook"
#define SAVED_NAME "pre-push.tenpak-saved"
#define HOOK_MAX (1u << 20)

int tp_hooks_git_fail(int code, const char *what)
{
	const git_error *e = git_error_last();
	return tp_error_set(code, "%s: %s", what, e && e->message ? e->message : "libgit2 error");
}

int tp_hooks_git_open(tp_git_repo *r, git_repository **out)
{
	/* Another handle on the git dir tp_git_repo_open found (it keeps its
	 * own private): a background run closes inherited descriptors, so it
	 * opens its own. */
	git_libgit2_init();
	git_repository *repo = NULL;
	if (git_repository_open_ext(&repo, tp_git_repo_dir(r), GIT_REPOSITORY_OPEN_NO_SEARCH,
				    NULL) < 0) {
		int rc = tp_hooks_git_fail(TP_EIO, "opening the git repository");
		git_libgit2_shutdown();
		return rc;
	}
	*out = repo;
	return 0;
}

void tp_hooks_git_close(git_repository *repo)
{
	if (!repo)
		return;
	git_repository_free(repo);
	git_libgit2_shutdown();
}

int tp_hooks_state_path(tp_git_repo *r, const char *sub, char **out)
{
	char *base = NULL;
	int rc = tp_path_join(&base, tp_git_repo_common_dir(r), "tenpak");
	if (!rc)
		rc = tp_path_join(out, base, sub);
	free(base);
	return rc;
}

int tp_hooks_dir(tp_git_repo *r, char **out)
{
	char *v = NULL;
	int rc = tp_git_config_get(r, "core.hooksPath", &v);
	if (rc == TP_ENOTFOUND || (rc == 0 && !*v)) {
		free(v);
		return tp_path_join(out, tp_git_repo_common_dir(r), "hooks");
	}
	if (rc)
		return rc;
	if (v[0] == '/') {
		*out = v;
		return 0;
	}
	const char *home = getenv("HOME");
	if (v[0] == '~' && v[1] == '/' && home && *home) {
		rc = tp_path_join(out, home, v + 2);
		free(v);
		return rc;
	}
	/* git runs hooks from the top of the work tree (the git dir when bare),
	 * and a relative core.hooksPath is taken from there. */
	git_repository *repo = NULL;
	if ((rc = tp_hooks_git_open(r, &repo)) == 0) {
		const char *top = git_repository_workdir(repo);
		rc = tp_path_join(out, top ? top : git_repository_path(repo), v);
		tp_hooks_git_close(repo);
	}
	free(v);
	return rc;
}

static int read_hook(const char *path, tp_buf *text)
{
	int rc = tp_fs_read_regular(path, text);
	if (rc == TP_ENOTFOUND) {
		tp_error_clear();
		return TP_ENOTFOUND;
	}
	return rc;
}

static bool is_ours(const tp_buf *text)
{
	return text->ptr && strstr(text->ptr, "\n" MARK) != NULL;
}

/* git-lfs's own pre-push hook: its only command is the `git lfs pre-push`
 * tenpak's hook runs anyway, so chaining it would upload twice. Every
 * line is a comment, blank, its git-lfs presence check or that command. */
static bool is_git_lfs_hook(const tp_buf *text)
{
	if (!text->ptr || !strstr(text->ptr, "git lfs pre-push \"$@\""))
		return false;
	const char *p = text->ptr, *end = text->ptr + text->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
			n--;
		bool ok = n == 0 || p[0] == '#' ||
			  (n == 21 && memcmp(p, "git lfs pre-push \"$@\"", 21) == 0) ||
			  (n > 20 && memcmp(p, "command -v git-lfs >", 20) == 0);
		if (!ok)
			return false;
		p += n;
		while (p < end && *p != '\n')
			p++;
		p++;
	}
	return true;
}

/* The template with the tenpak path (single-quoted for sh) and the chain
 * flag filled in. */
static int render(const char *exe, bool chain, tp_buf *out)
{
	int rc = 0;
	const char *t = tp_hooks_template, *end = t + tp_hooks_template_len;
	while (!rc && t < end) {
		const char *at = memchr(t, '@', (size_t)(end - t));
		if (!at) {
			rc = tp_buf_add(out, t, (size_t)(end - t));
			break;
		}
		rc = tp_buf_add(out, t, (size_t)(at - t));
		if (rc)
			break;
		if ((size_t)(end - at) >= 8 && memcmp(at, "@TENPAK@", 8) == 0) {
			rc = tp_buf_adds(out, "'");
			for (const char *c = exe; !rc && *c; c++)
				rc = *c == '\'' ? tp_buf_adds(out, "'\\''") : tp_buf_add(out, c, 1);
			if (!rc)
				rc = tp_buf_adds(out, "'");
			t = at + 8;
		} else if ((size_t)(end - at) >= 7 && memcmp(at, "@CHAIN@", 7) == 0) {
			rc = tp_buf_adds(out, chain ? "1" : "0");
			t = at + 7;
		} else {
			rc = tp_buf_add(out, at, 1);
			t = at + 1;
		}
	}
	return rc;
}

/* Write text to path through a temporary file in the same directory, so
 * git never runs half a hook. */
static int write_executable(const char *path, const tp_buf *text)
{
	tp_buf tmp = TP_BUF_INIT(8192);
	int rc = tp_buf_addf(&tmp, "%s.tenpak-tmp.XXXXXX", path);
	if (rc)
		goto done;
	int fd = mkstemp(tmp.ptr);
	if (fd < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "cannot create a file next to %s", path);
		goto done;
	}
	rc = tp_fs_write_all(fd, text->ptr, text->len);
	if (!rc && fchmod(fd, 0755) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "cannot make %s executable", tmp.ptr);
	if (close(fd) != 0 && !rc)
		rc = tp_error_set_errno(TP_EIO, errno, "cannot write %s", tmp.ptr);
	if (!rc && rename(tmp.ptr, path) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "cannot write %s", path);
	if (rc)
		unlink(tmp.ptr);
done:
	tp_buf_free(&tmp);
	return rc;
}

static int hook_paths(tp_git_repo *r, char **dir, char **hook, char **saved)
{
	int rc = tp_hooks_dir(r, dir);
	if (!rc)
		rc = tp_path_join(hook, *dir, "pre-push");
	if (!rc)
		rc = tp_path_join(saved, *dir, SAVED_NAME);
	return rc;
}

int tp_hooks_install(tp_git_repo *r, const char *exe, tp_hooks_install_result *out)
{
	char *dir = NULL, *hook = NULL, *saved = NULL;
	tp_buf old = TP_BUF_INIT(HOOK_MAX), saved_text = TP_BUF_INIT(HOOK_MAX),
	       text = TP_BUF_INIT(HOOK_MAX);
	tp_hooks_install_result res = { 0 };
	int rc = hook_paths(r, &dir, &hook, &saved);
	if (rc || (rc = tp_fs_mkdirs(dir)) != 0)
		goto done;
	rc = read_hook(hook, &old);
	if (rc && rc != TP_ENOTFOUND)
		goto done;
	bool had = rc == 0;
	rc = 0;
	if (had && is_ours(&old)) {
		res.updated = true;
	} else if (had && is_git_lfs_hook(&old) && access(saved, F_OK) == 0) {
		/* 'git lfs update --force' wrote its hook over tenpak's: tenpak's
		 * runs the same command, and the saved hook stays saved. */
		res.updated = true;
	} else if (had) {
		/* Never overwrite: the earlier hook moves aside, to be chained
		 * and put back by uninstall. One saved already (a hook written
		 * over ours since) would be lost: refuse instead. */
		if (access(saved, F_OK) == 0) {
			rc = tp_error_set(TP_EINVAL, "%s is not tenpak's hook and %s exists already: "
					  "merge them by hand, then install again", hook, saved);
			goto done;
		}
		if (rename(hook, saved) != 0) {
			rc = tp_error_set_errno(TP_EIO, errno, "cannot move %s to %s", hook, saved);
			goto done;
		}
	}
	/* The saved hook (moved now or by an earlier install) is chained unless
	 * it is git-lfs's own. */
	int src = read_hook(saved, &saved_text);
	if (src && src != TP_ENOTFOUND) {
		rc = src;
		goto done;
	}
	if (src == 0) {
		res.chained = !is_git_lfs_hook(&saved_text);
		if (!(res.saved = strdup(saved))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			goto done;
		}
	}
	if ((rc = render(exe, res.chained, &text)) != 0 || (rc = write_executable(hook, &text)) != 0)
		goto done;
	res.hook = hook;
	hook = NULL;
	*out = res;
	res = (tp_hooks_install_result){ 0 };
done:
	tp_hooks_install_result_clear(&res);
	tp_buf_free(&old);
	tp_buf_free(&saved_text);
	tp_buf_free(&text);
	free(dir);
	free(hook);
	free(saved);
	return rc;
}

int tp_hooks_uninstall(tp_git_repo *r, tp_hooks_uninstall_result *out)
{
	char *dir = NULL, *hook = NULL, *saved = NULL;
	tp_buf old = TP_BUF_INIT(HOOK_MAX);
	tp_hooks_uninstall_result res = { 0 };
	int rc = hook_paths(r, &dir, &hook, &saved);
	if (rc)
		goto done;
	rc = read_hook(hook, &old);
	if (rc && rc != TP_ENOTFOUND)
		goto done;
	bool had = rc == 0;
	rc = 0;
	if (had && !is_ours(&old)) {
		res.foreign = true;
	} else {
		if (had && unlink(hook) != 0) {
			rc = tp_error_set_errno(TP_EIO, errno, "cannot remove %s", hook);
			goto done;
		}
		res.removed = had;
		if (access(saved, F_OK) == 0) {
			if (rename(saved, hook) != 0) {
				rc = tp_error_set_errno(TP_EIO, errno, "cannot move %s back to %s",
							saved, hook);
				goto done;
			}
			res.restored = true;
		}
	}
	res.hook = hook;
	hook = NULL;
	*out = res;
done:
	tp_buf_free(&old);
	free(dir);
	free(hook);
	free(saved);
	return rc;
}

void tp_hooks_install_result_clear(tp_hooks_install_result *res)
{
	if (!res)
		return;
	free(res->hook);
	free(res->saved);
	*res = (tp_hooks_install_result){ 0 };
}

void tp_hooks_uninstall_result_clear(tp_hooks_uninstall_result *res)
{
	if (!res)
		return;
	free(res->hook);
	*res = (tp_hooks_uninstall_result){ 0 };
}
