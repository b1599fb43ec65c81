/* Numbers from the command line, git config and store URLs: one parser, so
 * that every setting accepts the same spellings. */
#include "tp_common.h"

#include <string.h>

/* Longest input quoted back in a message. */
#define QUOTE_MAX 64

/* The decimal digits at the start of s; returns where they end. *overflow
 * is set when their value does not fit in 64 bits. */
static const char *scan_digits(const char *s, uint64_t *v, bool *overflow)
{
	*v = 0;
	*overflow = false;
	for (; *s >= '0' && *s <= '9'; s++)
		*overflow |= __builtin_mul_overflow(*v, 10, v) ||
			     __builtin_add_overflow(*v, (uint64_t)(*s - '0'), v);
	return s;
}

/* The first len bytes of s (quoted at most QUOTE_MAX) are out of range. */
static int out_of_range(const char *s, size_t len, uint64_t min, uint64_t max, const char *unit)
{
	return tp_error_set(TP_EINVAL, "\"%.*s\" is not a number from %llu to %llu%s",
			    (int)(len < QUOTE_MAX ? len : QUOTE_MAX), s, (unsigned long long)min,
			    (unsigned long long)max, unit);
}

/* The digits at the start of s in [min, max]; whole: nothing may follow. */
static int parse_digits(const char *s, bool whole, uint64_t min, uint64_t max, const char **end,
			uint64_t *out)
{
	uint64_t v;
	bool overflow;
	if (!s)
		s = "";
	const char *e = scan_digits(s, &v, &overflow);
	if (e == s || (whole && *e))
		return tp_error_set(TP_EINVAL, whole ? "\"%.*s\" is not a whole number"
					      : "\"%.*s\" does not start with a whole number",
				    QUOTE_MAX, s);
	if (overflow || v < min || v > max)
		return out_of_range(s, (size_t)(e - s), min, max, "");
	*end = e;
	*out = v;
	return 0;
}

int tp_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	return parse_digits(s, true, min, max, &end, out);
}

int tp_parse_u64_prefix(const char *s, const char **end, uint64_t min, uint64_t max,
			uint64_t *out)
{
	return parse_digits(s, false, min, max, end, out);
}

int tp_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v, mult = 1;
	bool overflow;
	if (!s)
		s = "";
	const char *end = scan_digits(s, &v, &overflow);
	if (end != s) {
		switch (*end) {
		case 'k': case 'K': mult = 1ull << 10; end++; break;
		case 'm': case 'M': mult = 1ull << 20; end++; break;
		case 'g': case 'G': mult = 1ull << 30; end++; break;
		default: break;
		}
		/* "64M", "64MB" and "64MiB" all mean 64 << 20. */
		if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
			end += strlen(end);
	}
	if (end == s || *end)
		return tp_error_set(TP_EINVAL, "\"%.*s\" is not a size (a whole number of bytes, "
				    "or with K, M or G)", QUOTE_MAX, s);
	if (overflow || __builtin_mul_overflow(v, mult, &v) || v < min || v > max)
		return out_of_range(s, strlen(s), min, max, " bytes");
	*out = v;
	return 0;
}
