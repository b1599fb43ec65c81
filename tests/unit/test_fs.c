/*
 * The whole-file reader: tp_fs_read_regular and tp_fs_read_fd append a
 * file, a pipe or a FIFO's contents to a capped buffer; the cap is a hard
 * limit; a FIFO given as a path is refused without waiting on it.
 */
#include "tp_common.h"
#include "tp_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/tp-fs-test-XXXXXX";

static const char *path(const char *name)
{
	static char buf[4][512];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

static void write_file(const char *p, size_t n)
{
	FILE *f = fopen(p, "wb");
	for (size_t i = 0; f && i < n; i++)
		fputc('a' + (int)(i % 26), f);
	if (f)
		fclose(f);
}

static bool is_pattern(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != 'a' + (int)(i % 26))
			return false;
	return true;
}

static void regular_files(void)
{
	tp_buf b = TP_BUF_INIT(1000);
	write_file(path("f"), 300);
	CHECK_EQ_INT(tp_buf_adds(&b, "head:"), 0);
	CHECK_EQ_INT(tp_fs_read_regular(path("f"), &b), 0);
	CHECK(b.len == 305 && memcmp(b.ptr, "head:", 5) == 0 && is_pattern(b.ptr + 5, 300));
	CHECK(b.ptr[b.len] == '\0');
	tp_buf_free(&b);

	write_file(path("empty"), 0);
	CHECK_EQ_INT(tp_fs_read_regular(path("empty"), &b), 0);
	CHECK_EQ_INT(b.len, 0);
	tp_buf_free(&b);

	CHECK_EQ_INT(tp_fs_read_regular(path("missing"), &b), TP_ENOTFOUND);
	CHECK(strstr(tp_error_last(), "missing") != NULL);
	CHECK_EQ_INT(tp_fs_read_regular(dir, &b), TP_EINVAL);
}

static void the_cap(void)
{
	tp_buf b = TP_BUF_INIT(300);
	CHECK_EQ_INT(tp_fs_read_regular(path("f"), &b), 0); /* exactly the cap */
	CHECK_EQ_INT(b.len, 300);
	tp_buf_free(&b);

	b = (tp_buf)TP_BUF_INIT(299);
	CHECK_EQ_INT(tp_fs_read_regular(path("f"), &b), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "/f is larger than 299 bytes") != NULL);
	CHECK(b.len == 0); /* refused from its size, before reading */
	tp_buf_free(&b);

	/* What is in the buffer already counts. */
	b = (tp_buf)TP_BUF_INIT(400);
	CHECK_EQ_INT(tp_buf_addf(&b, "%0101d", 0), 0);
	CHECK_EQ_INT(tp_fs_read_regular(path("f"), &b), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "larger than 299 bytes") != NULL);
	CHECK_EQ_INT(b.len, 101);
	tp_buf_free(&b);
}

static void fifo_by_path_is_refused(void)
{
	tp_buf b = TP_BUF_INIT(1000);
	CHECK_EQ_INT(mkfifo(path("fifo"), 0600), 0);
	alarm(20); /* a reader that waits for a writer fails by the alarm */
	CHECK_EQ_INT(tp_fs_read_regular(path("fifo"), &b), TP_EINVAL);
	alarm(0);
	CHECK(strstr(tp_error_last(), "not a regular file") != NULL);
	tp_buf_free(&b);
}

/* A pipe fed n pattern bytes by a child process; returns the read end. */
static int pipe_of(size_t n, pid_t *child)
{
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	if ((*child = fork()) == 0) {
		close(fds[0]);
		FILE *f = fdopen(fds[1], "wb");
		for (size_t i = 0; f && i < n; i++)
			fputc('a' + (int)(i % 26), f);
		_exit(f && fclose(f) == 0 ? 0 : 1);
	}
	close(fds[1]);
	return fds[0];
}

static void read_pipe(size_t n, size_t cap, int want_rc)
{
	pid_t child = -1;
	tp_buf b = TP_BUF_INIT(cap);
	int fd = pipe_of(n, &child);
	CHECK(fd >= 0);
	CHECK_EQ_INT(tp_fs_read_fd(fd, "the pipe", &b), want_rc);
	if (want_rc == 0)
		CHECK(b.len == n && is_pattern(b.ptr, n));
	else
		CHECK(strstr(tp_error_last(), "the pipe is larger than") != NULL);
	close(fd); /* a child still writing gets EPIPE */
	waitpid(child, NULL, 0);
	tp_buf_free(&b);
}

static void pipes(void)
{
	read_pipe(300u << 10, 1u << 20, 0);       /* several steps of unknown size */
	read_pipe(0, 100, 0);
	read_pipe(256u << 10, 256u << 10, 0);     /* exactly the cap */
	read_pipe((256u << 10) + 1, 256u << 10, TP_ETOOBIG);
	read_pipe(1u << 20, 1000, TP_ETOOBIG);
}

int main(void)
{
	bool made = tp_test_mkdtemp(dir);
	CHECK(made);
	if (made) {
		TP_TEST_RUN(regular_files);
		TP_TEST_RUN(the_cap);
		TP_TEST_RUN(fifo_by_path_is_refused);
		TP_TEST_RUN(pipes);
		tp_test_rmtree(dir);
	}
	return TP_TEST_RESULT();
}
