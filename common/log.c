#include "tp_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int log_level = TP_LOG_WARN;
static const char *log_prog = "tenpak";
static int log_fd = -1; /* the trace log file, when one is open */

static bool env_truthy(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return false;
	return strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
}

void tp_log_init(const char *progname)
{
	if (progname)
		log_prog = progname;
	if (env_truthy("TENPAK_TRACE") || env_truthy("GIT_TRACE"))
		log_level = TP_LOG_TRACE;
}

void tp_log_set_level(int level)
{
	log_level = level;
}

bool tp_log_enabled(int level)
{
	return level <= log_level;
}

bool tp_log_trace_requested(void)
{
	return env_truthy("TENPAK_TRACE");
}

const char *tp_log_trace_file(void)
{
	const char *v = getenv("TENPAK_TRACE");
	return v && v[0] == '/' ? v : NULL;
}

int tp_log_open_file(const char *path)
{
	/* O_NONBLOCK: a FIFO named by mistake must not hang the agent. */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
	if (fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return tp_error_set(TP_EINVAL, "%s is not a regular file", path);
	}
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	tp_log(TP_LOG_INFO, "appending this log to %s", path);
	return 0;
}

void tp_log(int level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warning", "info", "trace" };
	if (!tp_log_enabled(level))
		return;
	char line[2048];
	int off = snprintf(line, sizeof(line), "%s[%ld]: %s: ", log_prog, (long)getpid(),
			   names[level < 0 ? 0 : level > 3 ? 3 : level]);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + off, sizeof(line) - (size_t)off, fmt, ap);
	va_end(ap);
	/* One write per line so concurrent agents do not interleave mid-line. */
	fprintf(stderr, "%s\n", line);
	if (log_fd < 0)
		return;
	/* The file outlives the session: each line says when. */
	char stamped[sizeof(line) + 32];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(stamped, sizeof(stamped), "%Y-%m-%d %H:%M:%S", &tm);
	int len = snprintf(stamped + n, sizeof(stamped) - n, ".%03ld %s\n",
			   ts.tv_nsec / 1000000, line);
	/* stamped has room for the stamp and all of line: no truncation. */
	if (len > 0)
		(void)!write(log_fd, stamped, n + (size_t)len);
}
