/* The tokenizer's tables, shared by loading (tokenizer.c) and encoding
 * (bpe.c); internal to runtime. */
#ifndef TP_TOKENIZER_INTERNAL_H
#define TP_TOKENIZER_INTERNAL_H

#include "runtime_internal.h"
#include "pretok.h"

#define METASPACE "\xe2\x96\x81" /* U+2581 */
#define MAX_STEPS 8 /* normalizer / pre-tokenizer steps */

typedef struct str_map {  /* token text -> id */
	size_t cap;       /* power of two */
	int32_t *slots;   /* id or -1 */
	char **keys;      /* by id: the tokens table */
	size_t *lens;
} str_map;

typedef struct merge_map { /* (left id, right id) -> rank, merged id */
	size_t cap;
	uint64_t *keys;    /* left << 32 | right, UINT64_MAX empty */
	int32_t *rank, *merged;
} merge_map;

typedef enum step_kind {
	STEP_PREPEND,   /* normalizer: prefix */
	STEP_REPLACE,   /* normalizer: literal replace */
	STEP_SPLIT,     /* pre-tokenizer: regex split, isolated */
	STEP_BYTELEVEL, /* pre-tokenizer: optional prefix space, regex, byte map */
	STEP_METASPACE, /* pre-tokenizer: spaces to U+2581 */
} step_kind;

typedef struct step {
	step_kind kind;
	char *a, *b;         /* prepend text / replace pattern + content */
	tp_pretok_regex re;
	bool use_regex, prefix_space, split;
	int prepend;         /* metaspace: 0 never, 1 first, 2 always */
} step;

typedef struct added {
	char *text;
	size_t len;
	int32_t id;
	bool special;
} added;

struct tp_tokenizer {
	str_map vocab;
	size_t ntokens;      /* 1 + largest id */
	merge_map merges;
	step norm[MAX_STEPS], pre[MAX_STEPS];
	size_t nnorm, npre;
	bool byte_level, byte_fallback, ignore_merges;
	int32_t unk, bos, byte_ids[256];
	added *added;
	size_t nadded;
	bool added_first[256]; /* bytes an added token can start with */
};

/* Id of a token's text, -1 when absent. */
int32_t tp_tok_vocab_get(const str_map *m, const char *s, size_t n);
/* Rank and result of merging (a, b); false when they do not merge. */
bool tp_tok_merge_get(const merge_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);

#endif
