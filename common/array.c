/* Growth for tp_array (tp_array.h). */
#include "tp_array.h"

#include <string.h>

/* The first allocation, in elements. */
#define FIRST_ALLOC 8

int tp_array_grow_(void *ptr, size_t *alloc, size_t len, size_t cap, size_t elem, size_t n)
{
	size_t limit = tp_array_limit_(cap, elem);
	if (len > limit || n > limit - len)
		return tp_error_set(TP_ETOOBIG, "array would exceed its %zu-element limit", limit);
	size_t want = len + n, grown = *alloc ? *alloc : FIRST_ALLOC;
	if (want <= *alloc)
		return 0;
	while (grown < want)
		grown = grown > limit / 2 ? limit : grown * 2;
	if (grown > limit)
		grown = limit;
	void *old, *p;
	memcpy(&old, ptr, sizeof(old));
	if (!(p = realloc(old, grown * elem)))
		return tp_error_set(TP_ENOMEM, "out of memory growing an array to %zu elements",
				    grown);
	memcpy(ptr, &p, sizeof(p));
	*alloc = grown;
	return 0;
}
