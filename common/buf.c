#include "tp_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Modelled on curl's dynbuf: grow geometrically, never beyond cap. */

void tp_buf_init(tp_buf *b, size_t cap)
{
	b->ptr = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap = cap;
}

void tp_buf_free(tp_buf *b)
{
	if (!b)
		return;
	free(b->ptr);
	b->ptr = NULL;
	b->len = b->alloc = 0;
}

void tp_buf_reset(tp_buf *b)
{
	b->len = 0;
	if (b->ptr)
		b->ptr[0] = '\0';
}

int tp_buf_grow(tp_buf *b, size_t need)
{
	size_t want;
	/* +1 keeps room for the terminating NUL. */
	if (!tp_add_ok(b->len, need, &want) || !tp_add_ok(want, 1, &want) ||
	    want - 1 > b->cap)
		return tp_error_set(TP_ETOOBIG, "buffer would exceed its %zu-byte limit", b->cap);
	if (want <= b->alloc)
		return 0;
	size_t n = b->alloc ? b->alloc : 64;
	while (n < want)
		n = n > SIZE_MAX / 2 ? want : n * 2;
	if (n - 1 > b->cap) /* not n > cap + 1: that wraps for a cap of SIZE_MAX */
		n = b->cap + 1;
	char *p = realloc(b->ptr, n);
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory growing a buffer to %zu bytes", n);
	b->ptr = p;
	b->alloc = n;
	return 0;
}

int tp_buf_add(tp_buf *b, const void *data, size_t n)
{
	int rc = tp_buf_grow(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return 0;
}

int tp_buf_adds(tp_buf *b, const char *s)
{
	return tp_buf_add(b, s, strlen(s));
}

int tp_buf_vaddf(tp_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return tp_error_set(TP_EINVAL, "bad format string");
	int rc = tp_buf_grow(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int tp_buf_addf(tp_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf(b, fmt, ap);
	va_end(ap);
	return rc;
}

/* The longest prefix of s, at most max bytes, that ends between two UTF-8
 * sequences (s has more than max bytes). */
static size_t utf8_prefix(const char *s, size_t max)
{
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

/* Append n bytes of s, or what fits followed by "..." */
static int add_cut(tp_buf *b, const char *s, size_t n)
{
	size_t room = b->cap > b->len ? b->cap - b->len : 0;
	if (n <= room)
		return tp_buf_add(b, s, n);
	if (room >= 3) {
		int rc = tp_buf_add(b, s, utf8_prefix(s, room - 3));
		return rc ? rc : tp_buf_add(b, "...", 3);
	}
	if (b->len < 3 || memcmp(b->ptr + b->len - 3, "...", 3) == 0)
		return 0;
	/* Already full: mark its end as cut. */
	b->len = utf8_prefix(b->ptr, b->len - 3);
	return tp_buf_add(b, "...", 3);
}

int tp_buf_vaddf_cut(tp_buf *b, const char *fmt, va_list ap)
{
	/* Format in full first: the arguments are in memory already. */
	tp_buf text = TP_BUF_INIT(SIZE_MAX / 2);
	int rc = tp_buf_vaddf(&text, fmt, ap);
	if (!rc)
		rc = add_cut(b, text.ptr, text.len);
	tp_buf_free(&text);
	return rc;
}

int tp_buf_addf_cut(tp_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(b, fmt, ap);
	va_end(ap);
	return rc;
}

char *tp_buf_detach(tp_buf *b)
{
	char *p = b->ptr;
	b->ptr = NULL;
	b->len = b->alloc = 0;
	return p;
}
