/*
 * Local directory backend. Layout under the root:
 *   <key>          stored bytes (keys such as objects/ab/cd/<oid>)
 *   tmp/           writes in progress; renamed into place when complete
 * Many processes may share a root: each write goes to its own temp file and
 * rename(2) publishes it atomically, so readers never see a partial value.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

#define IO_CHUNK (1u << 20)

typedef struct file_store {
	tp_store base;
	char *root;
	char *tmpdir;
} file_store;

static file_store *fs_of(tp_store *s)
{
	return (file_store *)s;
}

static int key_path(tp_store *s, const char *key, char **out)
{
	return tp_path_join(out, fs_of(s)->root, key);
}

static int file_stat(tp_store *s, const char *key, uint64_t *size)
{
	char *path = NULL;
	int rc = key_path(s, key, &path);
	if (rc)
		return rc;
	struct stat st;
	if (stat(path, &st) != 0)
		rc = errno == ENOENT ? tp_error_set(TP_ENOTFOUND, "%s: not in the store", key)
				     : tp_error_set_errno(tp_error_from_errno(errno), errno, "stat %s", path);
	else if (!S_ISREG(st.st_mode))
		rc = tp_error_set(TP_ECORRUPT, "%s is not a regular file", path);
	else
		*size = (uint64_t)st.st_size;
	free(path);
	return rc;
}

static int file_get(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		    const tp_store_sink *sink)
{
	char *path = NULL, *buf = NULL;
	int fd = -1;
	int rc = key_path(s, key, &path);
	if (rc)
		goto done;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = errno == ENOENT ? tp_error_set(TP_ENOTFOUND, "%s: not in the store", key)
				     : tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
		goto done;
	}
	if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "seeking in %s", path);
		goto done;
	}
	if (!(buf = malloc(IO_CHUNK))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	while (len > 0) {
		size_t want = len < IO_CHUNK ? (size_t)len : IO_CHUNK, got;
		if ((rc = tp_fs_read_full(fd, buf, want, &got)) != 0) {
			tp_error_wrap(rc, "reading %s", path);
			goto done;
		}
		if (got == 0)
			break;
		if ((rc = sink->write(sink->ctx, buf, got)) != 0)
			goto done;
		if (len != UINT64_MAX)
			len -= got;
	}
done:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return rc;
}

/* Create the directories leading to path's last component. */
static int mkdirs_parent(const char *path)
{
	char *dir = strdup(path);
	if (!dir)
		return tp_error_set(TP_ENOMEM, "out of memory");
	char *slash = strrchr(dir, '/');
	int rc = 0;
	if (slash && slash != dir) {
		*slash = '\0';
		rc = tp_fs_mkdirs(dir);
	}
	free(dir);
	return rc;
}

static int copy_source(int fd, const tp_store_source *src, const char *what)
{
	char *buf = malloc(IO_CHUNK);
	int rc = 0;
	if (!buf)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (;;) {
		size_t got = 0;
		if ((rc = src->read(src->ctx, buf, IO_CHUNK, &got)) != 0)
			break;
		if (got == 0)
			break;
		if ((rc = tp_fs_write_all(fd, buf, got)) != 0) {
			tp_error_wrap(rc, "writing %s", what);
			break;
		}
	}
	free(buf);
	return rc;
}

static int file_put(tp_store *s, const char *key, const tp_store_source *src)
{
	file_store *f = fs_of(s);
	char *dest = NULL, *tmp = NULL;
	int fd = -1, rc;
	if ((rc = key_path(s, key, &dest)) != 0 || (rc = tp_path_join(&tmp, f->tmpdir, "put-XXXXXX")) != 0)
		goto done;
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno,
					"creating a temporary file in %s", f->tmpdir);
		goto done;
	}
	if ((rc = copy_source(fd, src, tmp)) != 0)
		goto done;
	/* Durable before visible: fsync the data, then rename, then the dir. */
	if (fsync(fd) != 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "fsync %s", tmp);
		goto done;
	}
	/* Stored values never change in place; make that visible to admins. */
	fchmod(fd, 0444);
	if (close(fd) != 0) {
		fd = -1;
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "closing %s", tmp);
		goto done;
	}
	fd = -1;
	if ((rc = mkdirs_parent(dest)) != 0)
		goto done;
	if (rename(tmp, dest) != 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "renaming into %s", dest);
		goto done;
	}
	free(tmp);
	tmp = NULL;
	char *slash = strrchr(dest, '/');
	*slash = '\0';
	rc = tp_fs_fsync_dir(dest);
done:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dest);
	return rc;
}

static int file_remove(tp_store *s, const char *key)
{
	char *path = NULL;
	int rc = key_path(s, key, &path);
	if (!rc && unlink(path) != 0 && errno != ENOENT)
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "removing %s", path);
	free(path);
	return rc;
}

typedef struct list_walk {
	tp_store_list_fn fn;
	void *ctx;
	const char *prefix;
	tp_buf key;
} list_walk;

/* Depth-first walk of root/<w->key>; keys are built in w->key. */
static int walk(file_store *f, list_walk *w)
{
	char *dirpath = NULL;
	DIR *d = NULL;
	int rc = tp_path_join(&dirpath, f->root, w->key.len ? w->key.ptr : ".");
	if (rc)
		return rc;
	d = opendir(dirpath);
	if (!d) {
		rc = errno == ENOENT ? 0 : tp_error_set_errno(TP_EIO, errno, "listing %s", dirpath);
		goto done;
	}
	size_t base_len = w->key.len;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		w->key.len = base_len;
		if ((rc = tp_buf_addf(&w->key, "%s%s", base_len ? "/" : "", e->d_name)) != 0)
			goto done;
		/* Writes in progress are not keys. */
		if (strcmp(w->key.ptr, "tmp") == 0)
			continue;
		char *path = NULL;
		if ((rc = tp_path_join(&path, f->root, w->key.ptr)) != 0)
			goto done;
		struct stat st;
		int st_rc = lstat(path, &st);
		free(path);
		if (st_rc != 0)
			continue; /* removed while we walked */
		size_t plen = strlen(w->prefix);
		size_t klen = w->key.len;
		size_t cmp = klen < plen ? klen : plen;
		if (strncmp(w->key.ptr, w->prefix, cmp) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if ((rc = walk(f, w)) != 0)
				goto done;
		} else if (S_ISREG(st.st_mode) && klen >= plen) {
			if ((rc = w->fn(w->ctx, w->key.ptr, (uint64_t)st.st_size)) != 0)
				goto done;
		}
	}
	w->key.len = base_len;
	if (w->key.ptr)
		w->key.ptr[base_len] = '\0';
done:
	if (d)
		closedir(d);
	free(dirpath);
	return rc;
}

static int file_list(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx)
{
	list_walk w = { fn, ctx, prefix ? prefix : "", TP_BUF_INIT(4096) };
	int rc = walk(fs_of(s), &w);
	tp_buf_free(&w.key);
	return rc;
}

static void file_free(tp_store *s)
{
	file_store *f = fs_of(s);
	free(f->root);
	free(f->tmpdir);
	free(f->base.url);
	free(f);
}

static const tp_store_backend file_backend = {
	.scheme = "file",
	.stat = file_stat,
	.get = file_get,
	.put = file_put,
	.remove = file_remove,
	.list = file_list,
	.free = file_free,
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* file:///abs/path (percent-decoded) or /abs/path into a malloc'd path. */
static int url_to_path(const char *url, char **out)
{
	const char *p = url;
	if (strncmp(url, "file://", 7) == 0) {
		p = url + 7;
		if (strncmp(p, "localhost/", 10) == 0)
			p += 9;
		if (*p != '/')
			return tp_error_set(TP_ECONFIG, "store URL \"%s\": only local file:/// "
					    "URLs are supported", url);
	}
	bool is_url = p != url;
	char *path = malloc(strlen(p) + 1), *q = path;
	if (!path)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (; *p; p++) {
		if (is_url && *p == '%') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(path);
				return tp_error_set(TP_ECONFIG, "store URL \"%s\": bad %%-escape", url);
			}
			*q++ = (char)(hi * 16 + lo);
			p += 2;
		} else {
			*q++ = *p;
		}
	}
	*q = '\0';
	*out = path;
	return 0;
}

int tp_store_file_open(tp_store **out, const char *url, bool create)
{
	file_store *f = calloc(1, sizeof(*f));
	int rc;
	if (!f)
		return tp_error_set(TP_ENOMEM, "out of memory");
	f->base.backend = &file_backend;
	if ((rc = url_to_path(url, &f->root)) != 0)
		goto done;
	if (!(f->base.url = strdup(url))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = tp_path_join(&f->tmpdir, f->root, "tmp")) != 0)
		goto done;
	if (!create) {
		/* Readers must not leave an empty store behind a mistyped URL. */
		struct stat st;
		if (stat(f->root, &st) != 0)
			rc = errno == ENOENT
				? tp_error_set(TP_ENOTFOUND, "no store at %s", url)
				: tp_error_set_errno(TP_ECONFIG, errno, "store %s", url);
		else if (!S_ISDIR(st.st_mode))
			rc = tp_error_set(TP_ECONFIG, "store %s: %s is not a directory", url, f->root);
		goto done;
	}
	/* A new store is created on first use, like git-lfs's own storage. */
	if ((rc = tp_fs_mkdirs(f->tmpdir)) != 0) {
		/* A read-only store still serves downloads; writes fail later. */
		if (tp_fs_is_dir(f->root)) {
			tp_trace("store %s: %s", url, tp_error_last());
			rc = 0;
		} else {
			rc = tp_error_wrap(TP_ECONFIG, "store %s is not usable", url);
		}
	}
done:
	if (rc) {
		file_free(&f->base);
		return rc;
	}
	*out = &f->base;
	return 0;
}
