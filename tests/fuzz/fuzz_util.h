/* Small helpers shared by the fuzz targets (header-only: each target is
 * one translation unit linked with either libFuzzer or replay.c). */
#ifndef TP_FUZZ_UTIL_H
#define TP_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "tp_common.h"

/* An in-memory tp_delta_read_fn source. */
typedef struct fz_mem {
	const uint8_t *p;
	size_t len, pos;
} fz_mem;

static inline int fz_mem_read(void *ctx, void *buf, size_t n, size_t *got)
{
	fz_mem *m = ctx;
	size_t left = m->len - m->pos;
	size_t k = n < left ? n : left;
	if (k)
		memcpy(buf, m->p + m->pos, k);
	m->pos += k;
	*got = k;
	return 0;
}

/* tp_delta_write_fn into a tp_buf. */
static inline int fz_buf_write(void *ctx, const void *buf, size_t n)
{
	return tp_buf_add(ctx, buf, n);
}

/* A private directory for this process's temp files, removed at exit;
 * files inside are removed by the targets themselves. */
static char fz_dir_path[64];

static inline void fz_dir_cleanup(void)
{
	if (!fz_dir_path[0])
		return;
	DIR *d = opendir(fz_dir_path);
	struct dirent *e;
	char p[400];
	while (d && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", fz_dir_path, e->d_name);
			unlink(p);
		}
	}
	if (d)
		closedir(d);
	rmdir(fz_dir_path);
}

static inline const char *fz_dir(void)
{
	if (!fz_dir_path[0]) {
		const char *t = getenv("TMPDIR");
		snprintf(fz_dir_path, sizeof(fz_dir_path), "%s/tp-fuzz-XXXXXX",
			 t && *t && strlen(t) < 40 ? t : "/tmp");
		if (!mkdtemp(fz_dir_path)) {
			perror("mkdtemp");
			abort();
		}
		atexit(fz_dir_cleanup);
	}
	return fz_dir_path;
}

/* Path of a named file in the private directory (static storage per slot). */
static inline const char *fz_path(int slot, const char *name)
{
	static char paths[4][128];
	snprintf(paths[slot], sizeof(paths[slot]), "%s/%s", fz_dir(), name);
	return paths[slot];
}

static inline void fz_write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
		perror(path);
		abort();
	}
}

#endif
