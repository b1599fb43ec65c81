/* Read-only mappings of inputs. Pages are released behind the coder with
 * madvise(MADV_DONTNEED) so peak RSS does not grow with the model. */
#define _DEFAULT_SOURCE /* madvise */
#include "delta_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int tp_map_open(tp_map *m, const char *path)
{
	memset(m, 0, sizeof(*m));
	int fd, rc = tp_fs_open_regular(path, &fd);
	if (rc < 0)
		return rc;
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "stat %s", path);
		goto done;
	}
	m->size = (uint64_t)sb.st_size;
	if (m->size > SIZE_MAX) {
		rc = tp_error_set(TP_ETOOBIG, "%s is too large to map", path);
		goto done;
	}
	if (m->size) {
		void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "mapping %s", path);
			goto done;
		}
		m->ptr = p;
		/* The coder walks each tensor once, front to back. */
		madvise(p, (size_t)m->size, MADV_SEQUENTIAL);
	}
	if (!(m->path = strdup(path))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		tp_map_close(m);
	}
done:
	close(fd);
	return rc;
}

void tp_map_release(const tp_map *m, uint64_t off, uint64_t len)
{
	if (!m->ptr || len == 0)
		return;
	/* Round outward: a page shared with a chunk still being coded just
	 * refaults from the page cache. */
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = off / page * page;
	uint64_t end = off + len;
	end = end > m->size ? m->size : end;
	madvise((void *)(uintptr_t)(m->ptr + start), (size_t)(end - start), MADV_DONTNEED);
}

void tp_map_close(tp_map *m)
{
	if (m->ptr)
		munmap((void *)(uintptr_t)m->ptr, (size_t)m->size);
	free(m->path);
	memset(m, 0, sizeof(*m));
}

void tp_map_fingerprint(const tp_map *m, char out[65])
{
	enum { HEAD = 64 << 10, BLOCK = 4096, SAMPLES = 16 };
	tp_sha256 h;
	unsigned char d[TP_SHA256_LEN], sz[8];
	tp_sha256_init(&h);
	tp_le64(sz, m->size);
	tp_sha256_update(&h, sz, 8);
	if (m->size) {
		tp_sha256_update(&h, m->ptr, m->size < HEAD ? (size_t)m->size : HEAD);
		for (uint64_t i = 0; m->size > BLOCK && i < SAMPLES; i++) {
			uint64_t off = (m->size - BLOCK) / (SAMPLES - 1) * i;
			tp_sha256_update(&h, m->ptr + off, BLOCK);
		}
	}
	tp_sha256_final(&h, d);
	tp_sha256_hex(d, out);
}
