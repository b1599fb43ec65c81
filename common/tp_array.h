/*
 * Typed growable arrays, after libgit2's git_array_t: the compiler checks
 * the element type, growth doubles with every size checked for overflow,
 * and each array has a cap on its length, as a tp_buf has on its bytes.
 *
 *     tp_array(tp_map) maps = TP_ARRAY_INIT(4096);
 *     if ((rc = tp_array_push(&maps, m)) != 0)
 *             goto done;           // TP_ETOOBIG or TP_ENOMEM, maps unchanged
 *     ... maps.ptr[i], i < maps.len ...
 *     tp_array_clear(&maps);
 *
 * The array argument of these macros is evaluated more than once: pass a
 * plain &name or pointer, never an expression with side effects.
 */
#ifndef TP_ARRAY_H
#define TP_ARRAY_H

#include <stdint.h>
#include <stdlib.h>

#include "tp_common.h"

/* len elements in use of alloc allocated; never more than cap. */
#define tp_array(T)                     \
	struct {                        \
		T *ptr;                 \
		size_t len, alloc, cap; \
	}

#define TP_ARRAY_INIT(cap_) { NULL, 0, 0, (cap_) }

/* Room for n more elements: 0, or TP_ETOOBIG past the cap (or past what
 * memory can address), TP_ENOMEM; the array is unchanged on failure. */
#define tp_array_reserve(a, n) \
	tp_array_grow_(&(a)->ptr, &(a)->alloc, (a)->len, (a)->cap, sizeof(*(a)->ptr), (n))

/* Append v: 0, TP_ETOOBIG or TP_ENOMEM (and the array unchanged). */
#define tp_array_push(a, v)                                       \
	(tp_array_reserve((a), 1) == 0 ? ((a)->ptr[(a)->len++] = (v), 0) \
				       : tp_array_full_code_((a)->len, (a)->cap, sizeof(*(a)->ptr)))

/* Free the elements' memory (not what they point to); the cap stays. */
#define tp_array_clear(a)                 \
	do {                              \
		free((a)->ptr);           \
		(a)->ptr = NULL;          \
		(a)->len = (a)->alloc = 0; \
	} while (0)

/* ---- internals of the macros above ---- */

/* The most elements an array of cap and elem-byte elements may hold. */
static inline size_t tp_array_limit_(size_t cap, size_t elem)
{
	size_t addressable = SIZE_MAX / elem;
	return cap < addressable ? cap : addressable;
}

/* Why a one-element reserve failed: the limit, else memory. */
static inline int tp_array_full_code_(size_t len, size_t cap, size_t elem)
{
	return len < tp_array_limit_(cap, elem) ? TP_ENOMEM : TP_ETOOBIG;
}

/* ptr: the address of the array's T * (read and written with memcpy, so
 * any object pointer type will do). */
int tp_array_grow_(void *ptr, size_t *alloc, size_t len, size_t cap, size_t elem, size_t n);

#endif
