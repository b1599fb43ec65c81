/*
 * Local directory backend. Layout under the root:
 *   <key>          stored bytes (keys such as objects/ab/cd/<oid>)
 *   tmp/           writes in progress; renamed into place when complete
 * Many processes may share a root: each write goes to its own temp file and
 * rename(2) publishes it atomically, so readers never see a partial value.
 *
 * Reads and writes go through a descriptor of the root, opened once, one
 * component at a time with O_NOFOLLOW: a symlink planted inside the store
 * (objects/ab, tmp, an object) is never followed, so nothing is written or
 * served from outside the root. Only the root itself may be a link.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_internal.h"

#define IO_CHUNK (1u << 20)
#define TMP_DIR "tmp"

typedef struct file_store {
	tp_store base;
	char *root;
	char *tmpdir;
	int rootfd; /* valid when has_rootfd; stores are used from one thread */
	bool has_rootfd;
} file_store;

static file_store *fs_of(tp_store *s)
{
	return (file_store *)s;
}

/* A descriptor of the root for the caller to close; a missing root is
 * created when create is set, else TP_ENOTFOUND. */
static int root_open(file_store *f, bool create, int *out)
{
	if (!f->has_rootfd) {
		int fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT && create) {
			int rc = tp_fs_mkdirs(f->root);
			if (rc)
				return rc;
			fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		}
		if (fd < 0)
			return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening store %s",
						  f->root);
		f->rootfd = fd;
		f->has_rootfd = true;
	}
	*out = fcntl(f->rootfd, F_DUPFD_CLOEXEC, 0);
	if (*out < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening store %s", f->root);
	return 0;
}

/* Why name (key[0, len)) under dirfd could not be used: absent, a symlink,
 * or something else that is not what we need. */
static int path_error(file_store *f, int dirfd, const char *name, const char *key, size_t len,
		      int err)
{
	struct stat st;
	if (err == ENOENT)
		return tp_error_set(TP_ENOTFOUND, "%s/%.*s: not in the store", f->root, (int)len, key);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
		return tp_error_set(TP_ECORRUPT, "%s/%.*s is a symbolic link; tenpak does not follow "
				    "links inside a store", f->root, (int)len, key);
	return tp_error_set_errno(tp_error_from_errno(err), err, "opening %s/%.*s", f->root, (int)len,
				  key);
}

/* Open directory key[0, len) under the root, one component at a time and
 * without following symlinks; create missing ones when create is set. */
static int dir_open(file_store *f, const char *key, size_t len, bool create, int *out)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	char name[TP_STORE_KEY_MAX + 1];
	int fd = -1, rc = root_open(f, create, &fd);
	for (size_t at = 0; !rc && at < len; at++ /* the '/' */) {
		size_t n = strcspn(key + at, "/");
		n = n > len - at ? len - at : n;
		memcpy(name, key + at, n);
		name[n] = '\0';
		at += n;
		int next = openat(fd, name, flags);
		if (next < 0 && errno == ENOENT && create) {
			if (mkdirat(fd, name, 0777) != 0 && errno != EEXIST)
				rc = tp_error_set_errno(tp_error_from_errno(errno), errno,
							"creating directory %s/%.*s", f->root, (int)at,
							key);
			else
				next = openat(fd, name, flags);
		}
		if (!rc && next < 0)
			rc = path_error(f, fd, name, key, at, errno);
		close(fd);
		fd = next;
	}
	if (rc) {
		if (fd >= 0)
			close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* The directory holding key's last component (*leaf). */
static int key_dir(file_store *f, const char *key, bool create, int *out, const char **leaf)
{
	const char *slash = strrchr(key, '/');
	*leaf = slash ? slash + 1 : key;
	return dir_open(f, key, slash ? (size_t)(slash - key) : 0, create, out);
}

/* key's stat, refusing anything but a regular file (a symlink included). */
static int leaf_stat(file_store *f, int dirfd, const char *key, const char *leaf, struct stat *st)
{
	if (fstatat(dirfd, leaf, st, AT_SYMLINK_NOFOLLOW) != 0)
		return path_error(f, dirfd, leaf, key, strlen(key), errno);
	if (S_ISLNK(st->st_mode))
		return path_error(f, dirfd, leaf, key, strlen(key), ELOOP);
	if (!S_ISREG(st->st_mode))
		return tp_error_set(TP_ECORRUPT, "%s/%s is not a regular file", f->root, key);
	return 0;
}

static int file_stat(tp_store *s, const char *key, uint64_t *size)
{
	file_store *f = fs_of(s);
	const char *leaf;
	struct stat st;
	int dirfd, rc = key_dir(f, key, false, &dirfd, &leaf);
	if (rc)
		return rc;
	if ((rc = leaf_stat(f, dirfd, key, leaf, &st)) == 0)
		*size = (uint64_t)st.st_size;
	close(dirfd);
	return rc;
}

static int file_get(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		    const tp_store_sink *sink)
{
	file_store *f = fs_of(s);
	const char *leaf;
	struct stat st;
	char *buf = NULL;
	int fd = -1, dirfd, rc = key_dir(f, key, false, &dirfd, &leaf);
	if (rc)
		return rc;
	/* leaf_stat names what is wrong; O_NOFOLLOW and the regular-file
	 * check of the open itself make a swap after it harmless. */
	if ((rc = leaf_stat(f, dirfd, key, leaf, &st)) != 0)
		goto done;
	if ((rc = tp_fs_openat_regular(dirfd, leaf, O_NOFOLLOW, &fd)) != 0) {
		tp_error_wrap(rc, "store %s", f->root);
		goto done;
	}
	if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "seeking in %s/%s", f->root, key);
		goto done;
	}
	if (!(buf = malloc(IO_CHUNK))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	while (len > 0) {
		size_t want = len < IO_CHUNK ? (size_t)len : IO_CHUNK, got;
		if ((rc = tp_fs_read_full(fd, buf, want, &got)) != 0) {
			tp_error_wrap(rc, "reading %s/%s", f->root, key);
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
	close(dirfd);
	free(buf);
	return rc;
}

static int copy_source(int fd, const tp_store_source *src, const char *what)
{
	char *buf = malloc(IO_CHUNK);
	uint64_t written = 0, flushed = 0;
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
		written += got;
		/* A put fed by a codec lasts as long as the coding: its fsync
		 * then waits for the last few MiB only. */
		tp_fs_start_writeback(fd, written, &flushed);
	}
	free(buf);
	return rc;
}

/* A new file in tmp/ (as mkstemp, but relative to tmpfd): its name in
 * name[16], never an existing file or a link. */
static int tmp_create(file_store *f, int tmpfd, char name[16], int *out)
{
	static unsigned counter;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned seed = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 12);
	for (int i = 0; i < 100; i++) {
		snprintf(name, 16, "put-%08x", (seed + ++counter * 2654435761u) & 0xffffffffu);
		*out = openat(tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (*out >= 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	return tp_error_set_errno(tp_error_from_errno(errno), errno,
				  "creating a temporary file in %s", f->tmpdir);
}

static int file_put(tp_store *s, const char *key, const tp_store_source *src)
{
	file_store *f = fs_of(s);
	const char *leaf;
	char name[16] = "";
	int fd = -1, tmpfd = -1, dirfd = -1, rc;
	if ((rc = dir_open(f, TMP_DIR, strlen(TMP_DIR), true, &tmpfd)) != 0 ||
	    (rc = tmp_create(f, tmpfd, name, &fd)) != 0)
		goto done;
	if ((rc = copy_source(fd, src, f->tmpdir)) != 0)
		goto done;
	/* Durable before visible: fsync the data, then rename, then the dir. */
	if (fsync(fd) != 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "fsync %s/%s", f->tmpdir,
					name);
		goto done;
	}
	/* Stored values never change in place; make that visible to admins. */
	fchmod(fd, 0444);
	if (close(fd) != 0) {
		fd = -1;
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "closing %s/%s", f->tmpdir,
					name);
		goto done;
	}
	fd = -1;
	if ((rc = key_dir(f, key, true, &dirfd, &leaf)) != 0)
		goto done;
	/* renameat replaces a symlink at the key itself, never its target. */
	if (renameat(tmpfd, name, dirfd, leaf) != 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "renaming into %s/%s",
					f->root, key);
		goto done;
	}
	name[0] = '\0';
	rc = tp_fs_fsync_dirfd(dirfd, key);
done:
	if (fd >= 0)
		close(fd);
	if (name[0])
		unlinkat(tmpfd, name, 0);
	if (tmpfd >= 0)
		close(tmpfd);
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

static int file_remove(tp_store *s, const char *key)
{
	file_store *f = fs_of(s);
	const char *leaf;
	int dirfd, rc = key_dir(f, key, false, &dirfd, &leaf);
	if (rc)
		return rc == TP_ENOTFOUND ? 0 : rc;
	/* unlinkat removes a symlink itself, never what it points to. */
	if (unlinkat(dirfd, leaf, 0) != 0 && errno != ENOENT)
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "removing %s/%s", f->root,
					key);
	close(dirfd);
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
	if (f->has_rootfd)
		close(f->rootfd);
	free(f->root);
	free(f->tmpdir);
	free(f->base.url);
	free(f);
}

static const tp_store_backend file_backend = {
	.version = TP_STORE_BACKEND_VERSION,
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
	if ((rc = tp_store_init(&f->base, &file_backend, url)) != 0 ||
	    (rc = url_to_path(url, &f->root)) != 0)
		goto done;
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
