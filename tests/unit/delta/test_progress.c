/*
 * A progress callback that returns non-zero stops compress and apply
 * with its code: no call after that one, no output file and no temporary
 * left behind, worker threads joined and nothing leaked (the sanitizer
 * build checks the last two).
 */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#define CHUNK (64u << 10)
#define ELEMS (40u * CHUNK / 2) /* a BF16 tensor of 40 chunks */

static char dir[] = "/tmp/tp-delta-progress-XXXXXX";
static char tmp[6][512];

static const char *path(int i, const char *name)
{
	snprintf(tmp[i], sizeof(tmp[i]), "%s/%s", dir, name);
	return tmp[i];
}

static size_t count_files(void)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

typedef struct stopper {
	unsigned calls, stop_at; /* stop_at 0: never stop */
	int code;
	bool say_why;
	uint64_t done_before, total; /* done at the call before the stop */
} stopper;

static int stop_after(void *ctx, uint64_t done, uint64_t total)
{
	stopper *s = ctx;
	CHECK(done <= total);
	s->total = total;
	if (++s->calls != s->stop_at) {
		s->done_before = done;
		return 0;
	}
	return s->say_why ? tp_error_set(s->code, "git-lfs went away") : s->code;
}

static int count_bytes(void *ctx, const void *buf, size_t n)
{
	(void)buf;
	*(uint64_t *)ctx += n;
	return 0;
}

static tp_delta_opts opts_for(unsigned threads, stopper *s)
{
	return (tp_delta_opts){ .threads = threads, .chunk_size = CHUNK, .progress = stop_after,
				.progress_ctx = s };
}

static void write_pair(void)
{
	uint64_t seed = 7;
	t_tensor b = { "w", TP_DTYPE_BF16, 1, { ELEMS }, malloc(2 * ELEMS), 2 * ELEMS };
	t_tensor t = b;
	t.data = malloc(t.size);
	t_fill_special(b.data, b.size, 2, &seed);
	memcpy(t.data, b.data, t.size);
	for (size_t i = 0; i < t.size; i += 2)
		t.data[i] ^= (uint8_t)(t_rand(&seed) & 3);
	CHECK_EQ_INT(t_write_st(path(0, "base.st"), &b, 1, 0, NULL), 0);
	CHECK_EQ_INT(t_write_st(path(1, "ft.st"), &t, 1, 0, NULL), 0);
	free(b.data);
	free(t.data);
}

/* A callback that never stops sees every chunk, the last with done == total. */
static void test_reports_all(void)
{
	const char *base = tmp[0];
	for (unsigned threads = 1; threads <= 4; threads += 3) {
		stopper s = { 0 };
		tp_delta_opts o = opts_for(threads, &s);
		CHECK_EQ_INT(tp_delta_compress_file(tmp[1], &base, 1, path(2, "ft.delta"), &o, NULL), 0);
		CHECK(s.calls > 40);
		CHECK(s.done_before == s.total);
		unsigned compress_calls = s.calls;
		s = (stopper){ 0 };
		CHECK_EQ_INT(tp_delta_apply_file(tmp[2], &base, 1, path(3, "ft.out"), &o, NULL), 0);
		CHECK_EQ_INT(s.calls, compress_calls);
		CHECK(s.done_before == s.total);
		CHECK(t_same_files(tmp[1], tmp[3]));
		unlink(tmp[3]);
	}
}

/* What a stop to a file leaves: its code and message, no call after the
 * one that said stop, no output file and no temporary. */
static void check_stopped(int rc, const stopper *s, const char *what, const char *out,
			  size_t files)
{
	CHECK_EQ_INT(rc, s->code);
	CHECK_EQ_INT(s->calls, s->stop_at);
	CHECK(strstr(tp_error_last(), what) != NULL);
	CHECK(strstr(tp_error_last(), "git-lfs went away") != NULL);
	CHECK(!t_exists(out));
	CHECK_EQ_INT(count_files(), files);
}

/* Stopped after N calls, with 1 and 4 worker threads: compress and apply,
 * into a file and into a stream. */
static void test_stops(void)
{
	const char *base = tmp[0];
	size_t files = count_files();
	for (unsigned threads = 1; threads <= 4; threads += 3) {
		stopper s = { .stop_at = 5, .code = TP_ENOSPACE, .say_why = true };
		tp_delta_opts o = opts_for(threads, &s);
		const char *out = path(4, "stopped.delta");
		int rc = tp_delta_compress_file(tmp[1], &base, 1, out, &o, NULL);
		check_stopped(rc, &s, "delta compress", out, files);

		s = (stopper){ .stop_at = 4, .code = TP_EIO, .say_why = true };
		out = path(4, "stopped.out");
		rc = tp_delta_apply_file(tmp[2], &base, 1, out, &o, NULL);
		check_stopped(rc, &s, "delta apply", out, files);

		/* A code of the caller's own, without a message, to a stream. */
		uint64_t written = 0;
		s = (stopper){ .stop_at = 3, .code = 42 };
		CHECK_EQ_INT(tp_delta_compress(tmp[1], &base, 1, count_bytes, &written, &o, NULL), 42);
		CHECK_EQ_INT(s.calls, 3);
		CHECK(strstr(tp_error_last(), "stopped by the caller") != NULL);
		CHECK(written > 0 && written < 40 * CHUNK / 4);

		/* Only the chunks reported before the stop were written. */
		int fd = open(tmp[2], O_RDONLY);
		written = 0;
		s = (stopper){ .stop_at = 10, .code = TP_EPROTO };
		CHECK_EQ_INT(tp_delta_apply_to(tp_delta_fd_read, &fd, &base, 1, count_bytes, &written,
					       &o, NULL), TP_EPROTO);
		close(fd);
		CHECK_EQ_INT(s.calls, 10);
		CHECK_EQ_INT(written, s.done_before);
	}
}

int main(void)
{
	if (!tp_test_mkdtemp(dir))
		return 1;
	write_pair();
	TP_TEST_RUN(test_reports_all);
	TP_TEST_RUN(test_stops);
	tp_test_rmtree(dir);
	return TP_TEST_RESULT();
}
