/* Unicode classes and the regex pre-tokenizers (internal to runtime). */
#ifndef TP_PRETOK_H
#define TP_PRETOK_H

#include "tp_common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum tp_pretok_regex {
	TP_PRETOK_GPT2,   /* also ByteLevel's built-in use_regex */
	TP_PRETOK_LLAMA3, /* digits in groups of up to 3 */
	TP_PRETOK_QWEN2,  /* single digits */
} tp_pretok_regex;

bool tp_uni_is_letter(uint32_t cp);
bool tp_uni_is_number(uint32_t cp);
bool tp_uni_is_space(uint32_t cp);
/* Decode one code point from s (len > 0); returns bytes used. Invalid
 * UTF-8 yields U+FFFD for one byte. */
size_t tp_utf8_decode(const char *s, size_t len, uint32_t *cp);
/* Length in code points of the pre-token starting at cps[i] (i < n). */
size_t tp_pretok_match(tp_pretok_regex re, const uint32_t *cps, size_t n, size_t i);
/* Recognize a Split pre-tokenizer's regex; TP_EUNSUPPORTED otherwise. */
int tp_pretok_regex_from_pattern(const char *pattern, tp_pretok_regex *out);

#endif
