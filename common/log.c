#include "tp_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int log_level = TP_LOG_WARN;
static const char *log_prog = "tenpak";

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
}
