#define _GNU_SOURCE /* sync_file_range */
#include "tp_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tp_fs_start_writeback(int fd, uint64_t written, uint64_t *flushed)
{
	if (written - *flushed < TP_FS_WRITEBACK)
		return;
#ifdef SYNC_FILE_RANGE_WRITE
	(void)sync_file_range(fd, (off_t)*flushed, (off_t)(written - *flushed),
			      SYNC_FILE_RANGE_WRITE);
#else
	(void)fd;
#endif
	*flushed = written;
}

int tp_fs_mkdirs(const char *path)
{
	char *p = strdup(path);
	int rc = 0;
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	size_t len = strlen(p);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0777) != 0 && errno != EEXIST) {
			rc = tp_error_set_errno(tp_error_from_errno(errno), errno,
						"creating directory %s", p);
			goto done;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	if (!tp_fs_is_dir(path))
		rc = tp_error_set(TP_EIO, "%s exists and is not a directory", path);
done:
	free(p);
	return rc;
}

bool tp_fs_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int tp_fs_openat_regular(int dirfd, const char *name, int flags, int *fd)
{
	/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	 * writer forever. It is cleared again once we know the file is regular. */
	int f = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | flags);
	if (f < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", name);
	struct stat st;
	if (fstat(f, &st) != 0) {
		int e = errno;
		close(f);
		return tp_error_set_errno(TP_EIO, e, "opening %s", name);
	}
	if (!S_ISREG(st.st_mode)) {
		close(f);
		return tp_error_set(TP_EINVAL, "%s is not a regular file", name);
	}
	int fl = fcntl(f, F_GETFL);
	if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
		int e = errno;
		close(f);
		return tp_error_set_errno(TP_EIO, e, "opening %s", name);
	}
	*fd = f;
	return 0;
}

int tp_fs_open_regular(const char *path, int *fd)
{
	return tp_fs_openat_regular(AT_FDCWD, path, 0, fd);
}

/* Bytes read at a time when the size is not known beforehand. */
#define READ_STEP (64u << 10)

static int read_too_big(const char *name, const tp_buf *out)
{
	return tp_error_set(TP_ETOOBIG, "%s is larger than %zu bytes", name, out->cap - out->len);
}

int tp_fs_read_fd(int fd, const char *name, tp_buf *out)
{
	struct stat st;
	size_t step = READ_STEP, got = 0;
	int rc;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		if ((uint64_t)st.st_size > out->cap - out->len)
			return read_too_big(name, out);
		step = (size_t)st.st_size + 1; /* the 1 finds the end without growing */
	}
	for (;;) {
		size_t room = out->cap - out->len < step ? out->cap - out->len : step;
		if (room == 0) { /* at the cap: one more byte is one too many */
			char extra;
			if ((rc = tp_fs_read_full(fd, &extra, 1, &got)) != 0)
				return tp_error_wrap(rc, "reading %s", name);
			return got ? read_too_big(name, out) : 0;
		}
		if ((rc = tp_buf_grow(out, room)) != 0)
			return rc;
		if ((rc = tp_fs_read_full(fd, out->ptr + out->len, room, &got)) != 0)
			return tp_error_wrap(rc, "reading %s", name);
		out->len += got;
		out->ptr[out->len] = '\0';
		if (got < room)
			return 0;
		step = READ_STEP; /* a file that grew, or one of unknown size */
	}
}

int tp_fs_read_regular(const char *path, tp_buf *out)
{
	int fd = -1, rc = tp_fs_open_regular(path, &fd);
	if (rc)
		return rc;
	rc = tp_fs_read_fd(fd, path, out);
	close(fd);
	return rc;
}

bool tp_fs_is_regular(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tp_fs_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return tp_error_set_errno(tp_error_from_errno(errno), errno, "write failed");
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int tp_fs_write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0)
		return tp_error_set(TP_EIO, "%s: %s", path, strerror(errno));
	int rc = tp_fs_write_all(fd, data, n);
	if (close(fd) < 0 && rc == 0)
		rc = tp_error_set(TP_EIO, "%s: %s", path, strerror(errno));
	return rc < 0 ? tp_error_wrap(rc, "writing %s", path) : 0;
}

int tp_fs_read_full(int fd, void *buf, size_t n, size_t *got)
{
	char *p = buf;
	size_t total = 0;
	while (total < n) {
		ssize_t r = read(fd, p + total, n - total);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return tp_error_set_errno(tp_error_from_errno(errno), errno, "read failed");
		}
		if (r == 0)
			break;
		total += (size_t)r;
	}
	*got = total;
	return 0;
}

int tp_fs_fsync_dirfd(int fd, const char *dir)
{
	/* Some filesystems refuse fsync on directories; that is not data loss. */
	if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
		return tp_error_set_errno(TP_EIO, errno, "fsync %s", dir);
	return 0;
}

int tp_fs_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", dir);
	int rc = tp_fs_fsync_dirfd(fd, dir);
	close(fd);
	return rc;
}

int tp_path_join(char **out, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	while (la > 1 && a[la - 1] == '/')
		la--;
	while (lb > 0 && b[0] == '/')
		b++, lb--;
	char *p = malloc(la + lb + 2);
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	memcpy(p, a, la);
	size_t off = la;
	if (!(la == 1 && a[0] == '/'))
		p[off++] = '/';
	memcpy(p + off, b, lb);
	p[off + lb] = '\0';
	*out = p;
	return 0;
}

void tp_fmt_bytes(uint64_t n, char *out, size_t outlen)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;
	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(out, outlen, "%llu B", (unsigned long long)n);
	else
		snprintf(out, outlen, "%.2f %s", v, units[u]);
}
