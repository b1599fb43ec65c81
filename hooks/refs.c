/* git's pre-push input: "<local ref> SP <local oid> SP <remote ref> SP <remote oid> LF". */
#include <stdlib.h>
#include <string.h>

#include "hooks_internal.h"
#include "tp_array.h"

#define REFS_MAX 100000

static bool hex_oid(const char *s, size_t n)
{
	if (n != 40 && n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Copy the next space-separated field of [*p, end) into out (cap bytes). */
static bool field(const char **p, const char *end, char *out, size_t cap)
{
	const char *s = *p, *sp = memchr(s, ' ', (size_t)(end - s));
	const char *e = sp ? sp : end;
	size_t n = (size_t)(e - s);
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	*p = sp ? sp + 1 : end;
	return true;
}

int tp_hooks_refs_parse(const char *text, size_t len, tp_hooks_ref **out, size_t *n)
{
	tp_array(tp_hooks_ref) refs = TP_ARRAY_INIT(REFS_MAX);
	size_t line = 0;
	const char *p = text, *end = text + len;
	int rc = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		line++;
		if (le == p) { /* a blank line carries nothing */
			p = le + 1;
			continue;
		}
		tp_hooks_ref r;
		const char *q = p;
		if (!field(&q, le, r.local_ref, sizeof(r.local_ref)) ||
		    !field(&q, le, r.local_oid, sizeof(r.local_oid)) ||
		    !field(&q, le, r.remote_ref, sizeof(r.remote_ref)) ||
		    !field(&q, le, r.remote_oid, sizeof(r.remote_oid)) || q != le ||
		    !hex_oid(r.local_oid, strlen(r.local_oid)) ||
		    !hex_oid(r.remote_oid, strlen(r.remote_oid))) {
			rc = tp_error_set(TP_EINVAL, "pre-push input line %zu is not "
					  "'<local ref> <oid> <remote ref> <oid>'", line);
			goto done;
		}
		if ((rc = tp_array_push(&refs, r)) != 0)
			goto done;
		p = le + 1;
	}
	*out = refs.ptr;
	*n = refs.len;
	refs.ptr = NULL;
done:
	tp_array_clear(&refs);
	return rc;
}
