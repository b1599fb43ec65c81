/*
 * The regex pre-tokenizer splits of GPT-2 and Llama-3 / Qwen2, hand-coded:
 * each alternative of the pattern is tried in order at a position, with
 * the same greedy/backtracking outcome the regex engine would give.
 */
#include "pretok.h"

#include "unicode_tables.inc"

static bool in_table(const uint32_t (*t)[2], size_t n, uint32_t cp)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cp < t[mid][0])
			hi = mid;
		else if (cp > t[mid][1])
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

bool tp_uni_is_letter(uint32_t cp)
{
	if (cp < 0x80)
		return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
	return in_table(tp_uni_letter, sizeof(tp_uni_letter) / sizeof(tp_uni_letter[0]), cp);
}

bool tp_uni_is_number(uint32_t cp)
{
	if (cp < 0x80)
		return cp >= '0' && cp <= '9';
	return in_table(tp_uni_number, sizeof(tp_uni_number) / sizeof(tp_uni_number[0]), cp);
}

/* Unicode White_Space, which is what \s means in the regex crate. */
bool tp_uni_is_space(uint32_t cp)
{
	return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
	       (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t tp_utf8_decode(const char *s, size_t len, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t need = u[0] < 0x80 ? 1 : (u[0] & 0xE0) == 0xC0 ? 2 : (u[0] & 0xF0) == 0xE0 ? 3
		    : (u[0] & 0xF8) == 0xF0 ? 4 : 0;
	if (need == 0 || need > len) {
		*cp = 0xFFFD; /* invalid: one byte, classed as a symbol */
		return 1;
	}
	uint32_t v = need == 1 ? u[0] : u[0] & (0x7F >> need);
	for (size_t i = 1; i < need; i++) {
		if ((u[i] & 0xC0) != 0x80) {
			*cp = 0xFFFD;
			return 1;
		}
		v = v << 6 | (u[i] & 0x3F);
	}
	*cp = v;
	return need;
}

static bool is_other(uint32_t c)
{
	return !tp_uni_is_space(c) && !tp_uni_is_letter(c) && !tp_uni_is_number(c);
}

static bool is_crlf(uint32_t c)
{
	return c == '\r' || c == '\n';
}

static size_t run(const uint32_t *c, size_t n, size_t i, bool (*pred)(uint32_t))
{
	size_t j = i;
	while (j < n && pred(c[j]))
		j++;
	return j - i;
}

static uint32_t lower_ascii(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd, optionally case-insensitive. */
static size_t contraction(const uint32_t *c, size_t n, size_t i, bool icase)
{
	if (c[i] != '\'' || i + 1 >= n)
		return 0;
	uint32_t a = icase ? lower_ascii(c[i + 1]) : c[i + 1];
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if (i + 2 >= n)
		return 0;
	uint32_t b = icase ? lower_ascii(c[i + 2]) : c[i + 2];
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/* \s+(?!\S) then \s+: a whitespace run leaves its last char to a word. */
static size_t spaces(const uint32_t *c, size_t n, size_t i)
{
	size_t r = run(c, n, i, tp_uni_is_space);
	if (r == 0)
		return 0;
	return i + r == n || r == 1 ? r : r - 1;
}

/* ' ?' followed by a run of pred. */
static size_t opt_space_run(const uint32_t *c, size_t n, size_t i, bool (*pred)(uint32_t))
{
	size_t j = i + (c[i] == ' ');
	size_t r = run(c, n, j, pred);
	return r ? j - i + r : 0;
}

static size_t match_gpt2(const uint32_t *c, size_t n, size_t i)
{
	size_t m;
	if ((m = contraction(c, n, i, false)) || (m = opt_space_run(c, n, i, tp_uni_is_letter)) ||
	    (m = opt_space_run(c, n, i, tp_uni_is_number)) ||
	    (m = opt_space_run(c, n, i, is_other)) || (m = spaces(c, n, i)))
		return m;
	return 1;
}

static size_t match_llama3(const uint32_t *c, size_t n, size_t i, size_t max_digits)
{
	size_t m;
	if ((m = contraction(c, n, i, true)))
		return m;
	/* [^\r\n\p{L}\p{N}]?\p{L}+ */
	if (tp_uni_is_letter(c[i]))
		return run(c, n, i, tp_uni_is_letter);
	if (!is_crlf(c[i]) && !tp_uni_is_number(c[i]) && i + 1 < n && tp_uni_is_letter(c[i + 1]))
		return 1 + run(c, n, i + 1, tp_uni_is_letter);
	/* \p{N}{1,max} */
	if ((m = run(c, n, i, tp_uni_is_number)))
		return m < max_digits ? m : max_digits;
	/* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
	if ((m = opt_space_run(c, n, i, is_other)))
		return m + run(c, n, i + m, is_crlf);
	/* \s*[\r\n]+ ends after the run's last line break */
	size_t r = run(c, n, i, tp_uni_is_space);
	for (size_t k = r; k > 0; k--)
		if (is_crlf(c[i + k - 1]))
			return k;
	return r ? spaces(c, n, i) : 1;
}

size_t tp_pretok_match(tp_pretok_regex re, const uint32_t *cps, size_t n, size_t i)
{
	switch (re) {
	case TP_PRETOK_GPT2: return match_gpt2(cps, n, i);
	case TP_PRETOK_LLAMA3: return match_llama3(cps, n, i, 3);
	default: return match_llama3(cps, n, i, 1);
	}
}

static const char pat_gpt2[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char pat_llama3[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?"
	"[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char pat_qwen2[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?"
	"[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tp_pretok_regex_from_pattern(const char *pattern, tp_pretok_regex *out)
{
	static const struct { const char *pat; tp_pretok_regex re; } known[] = {
		{ pat_gpt2, TP_PRETOK_GPT2 },
		{ pat_llama3, TP_PRETOK_LLAMA3 },
		{ pat_qwen2, TP_PRETOK_QWEN2 },
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(pattern, known[i].pat) == 0) {
			*out = known[i].re;
			return 0;
		}
	return tp_error_set(TP_EUNSUPPORTED, "pre-tokenizer regex is not one of GPT-2, "
			    "Llama-3 or Qwen2: %.60s", pattern);
}
