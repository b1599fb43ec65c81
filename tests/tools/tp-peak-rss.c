/*
 * tp-peak-rss: run a command and report its peak resident set against the
 * size of a file (the model it loads). A test tool for the memory of
 * `tenpak optimize` (optimize/README.md, "Memory").
 *
 *   tp-peak-rss --file F [--max FACTOR:ALLOW_KIB] -- CMD [ARGS...]
 *
 * Prints "peak_kib=P file_kib=S ratio=R" (P: the child's getrusage
 * ru_maxrss, KiB; R = P / S). Exit status: the command's when it fails
 * (128 + signal when killed), 3 when P > FACTOR * S + ALLOW_KIB, 77
 * (skipped) in an AddressSanitizer build, whose shadow memory makes resident
 * sizes meaningless, 2 on usage errors, else 0. The command's output goes
 * to this tool's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

static int usage(void)
{
	fprintf(stderr, "usage: tp-peak-rss --file F [--max FACTOR:ALLOW_KIB] -- CMD [ARGS...]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *file = NULL, *cap = NULL;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
		if (i + 1 >= argc)
			return usage();
		if (strcmp(argv[i], "--file") == 0)
			file = argv[i + 1];
		else if (strcmp(argv[i], "--max") == 0)
			cap = argv[i + 1];
		else
			return usage();
	}
	double factor = 0;
	long allow = 0;
	if (!file || i + 1 >= argc || (cap && sscanf(cap, "%lf:%ld", &factor, &allow) != 2))
		return usage();
#ifdef ASAN_BUILD
	fprintf(stderr, "tp-peak-rss: skipped under AddressSanitizer\n");
	return 77;
#endif
	struct stat st;
	if (stat(file, &st) != 0) {
		fprintf(stderr, "tp-peak-rss: %s: %s\n", file, strerror(errno));
		return 1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "tp-peak-rss: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		execvp(argv[i + 1], argv + i + 1);
		fprintf(stderr, "tp-peak-rss: %s: %s\n", argv[i + 1], strerror(errno));
		_exit(127);
	}
	int status = 0;
	struct rusage ru;
	/* The only child: RUSAGE_CHILDREN's maximum is its peak. */
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "tp-peak-rss: wait: %s\n", strerror(errno));
			return 1;
		}
	}
	if (getrusage(RUSAGE_CHILDREN, &ru) != 0) {
		fprintf(stderr, "tp-peak-rss: getrusage: %s\n", strerror(errno));
		return 1;
	}
	long peak = ru.ru_maxrss, file_kib = (long)(st.st_size / 1024);
	printf("peak_kib=%ld file_kib=%ld ratio=%.3f\n", peak, file_kib,
	       file_kib ? (double)peak / (double)file_kib : 0.0);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	if (WEXITSTATUS(status) != 0)
		return WEXITSTATUS(status);
	if (cap && (double)peak > factor * (double)file_kib + (double)allow) {
		fprintf(stderr, "tp-peak-rss: peak %ld KiB > %.2f x %ld KiB file + %ld KiB\n", peak,
			factor, file_kib, allow);
		return 3;
	}
	return 0;
}
