/*
 * A minimal test harness: CHECK records a failure and goes on, so one run
 * reports every broken expectation. TP_TEST_MAIN prints "N passed, M failed"
 * and exits non-zero if anything failed.
 */
#ifndef TP_TEST_H
#define TP_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tp_test_passed, tp_test_failed;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (cond) {                                                    \
			tp_test_passed++;                                      \
		} else {                                                       \
			tp_test_failed++;                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                           \
	do {                                                                         \
		long long tp_a_ = (long long)(a), tp_b_ = (long long)(b);            \
		if (tp_a_ == tp_b_) {                                                \
			tp_test_passed++;                                            \
		} else {                                                             \
			tp_test_failed++;                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, tp_a_, tp_b_);           \
		}                                                                    \
	} while (0)

#define CHECK_STR(a, b)                                                          \
	do {                                                                     \
		const char *tp_a_ = (a), *tp_b_ = (b);                           \
		if (tp_a_ && tp_b_ && strcmp(tp_a_, tp_b_) == 0) {               \
			tp_test_passed++;                                        \
		} else {                                                         \
			tp_test_failed++;                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", \
				__FILE__, __LINE__, #a, #b, tp_a_ ? tp_a_ : "(null)", \
				tp_b_ ? tp_b_ : "(null)");                       \
		}                                                                \
	} while (0)

#define TP_TEST_RUN(fn)                         \
	do {                                    \
		fprintf(stderr, "-- %s\n", #fn); \
		fn();                           \
	} while (0)

/* Make a fresh directory from a mkdtemp template ("/tmp/name-XXXXXX");
 * false, saying why, when it cannot be made. */
static inline bool tp_test_mkdtemp(char *tmpl)
{
	if (mkdtemp(tmpl))
		return true;
	perror("mkdtemp");
	return false;
}

/* Remove a tree made by tp_test_mkdtemp (its name holds no quote). */
static inline void tp_test_rmtree(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

#define TP_TEST_RESULT()                                                        \
	(printf("%d passed, %d failed\n", tp_test_passed, tp_test_failed), \
	 tp_test_failed ? 1 : 0)

#endif
