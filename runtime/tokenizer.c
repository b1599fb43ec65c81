/*
 * Hugging Face tokenizer.json, BPE model only: byte-level (GPT-2, Llama-3,
 * Qwen2) or SentencePiece-style with a metaspace and byte fallback
 * (Llama-2, Mistral). Anything else is refused with a clear error. This file
 * loads one; bpe.c encodes with it.
 */
#include "tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VOCAB (16u << 20)

/* ---- hash tables ---------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	return x ^ (x >> 33);
}

static size_t pow2_above(size_t n)
{
	size_t c = 16;
	while (c < 2 * n)
		c *= 2;
	return c;
}

int32_t tp_tok_vocab_get(const str_map *m, const char *s, size_t n)
{
	for (size_t i = hash_bytes(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		int32_t id = m->slots[i];
		if (id < 0 || (m->lens[id] == n && memcmp(m->keys[id], s, n) == 0))
			return id;
	}
}

/* Vocabulary ids may be sparse; the slot holds the first id for a text. */
static void str_map_put(str_map *m, int32_t id)
{
	size_t i = hash_bytes(m->keys[id], m->lens[id]) & (m->cap - 1);
	while (m->slots[i] >= 0) {
		int32_t o = m->slots[i];
		if (m->lens[o] == m->lens[id] && memcmp(m->keys[o], m->keys[id], m->lens[id]) == 0)
			return;
		i = (i + 1) & (m->cap - 1);
	}
	m->slots[i] = id;
}

bool tp_tok_merge_get(const merge_map *m, int32_t a, int32_t b, int32_t *rank,
		      int32_t *merged)
{
	if (!m->cap)
		return false;
	uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	for (size_t i = hash_u64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == UINT64_MAX)
			return false;
		if (m->keys[i] == k) {
			*rank = m->rank[i];
			*merged = m->merged[i];
			return true;
		}
	}
}

/* Keeps the first (lowest-rank) entry for a repeated pair. */
static void merge_put(merge_map *m, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
	uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	size_t i = hash_u64(k) & (m->cap - 1);
	while (m->keys[i] != UINT64_MAX && m->keys[i] != k)
		i = (i + 1) & (m->cap - 1);
	if (m->keys[i] == k)
		return;
	m->keys[i] = k;
	m->rank[i] = rank;
	m->merged[i] = merged;
}

static int bad(const char *what)
{
	return tp_error_set(TP_ECORRUPT, "tokenizer.json: bad %s", what);
}

static const char *json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_bool(const cJSON *o, const char *key, bool def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static bool json_id(const cJSON *v, int32_t *out)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= MAX_VOCAB ||
	    v->valuedouble != (double)(int32_t)v->valuedouble)
		return false;
	*out = (int32_t)v->valuedouble;
	return true;
}

/* Set token text for id (vocab or added); the tokens table grows to fit. */
static int set_token(tp_tokenizer *t, int32_t id, const char *s)
{
	if ((size_t)id >= t->vocab.cap / 2)
		return bad("token id (beyond vocabulary)");
	if (t->vocab.keys[id])
		return 0; /* an added token repeating a vocabulary entry */
	if (!(t->vocab.keys[id] = strdup(s)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	t->vocab.lens[id] = strlen(s);
	if ((size_t)id + 1 > t->ntokens)
		t->ntokens = (size_t)id + 1;
	str_map_put(&t->vocab, id);
	return 0;
}

static int load_vocab(tp_tokenizer *t, const cJSON *vocab, const cJSON *added_list)
{
	int n = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added_list);
	if (!cJSON_IsObject(vocab) || n <= 0 || (size_t)n > MAX_VOCAB)
		return bad("model.vocab");
	/* ids must stay below cap / 2, which also keeps the table half empty */
	size_t cap = pow2_above((size_t)n + 256);
	str_map *m = &t->vocab;
	m->cap = cap;
	m->slots = malloc(cap * sizeof(*m->slots));
	m->keys = calloc(cap / 2, sizeof(*m->keys));
	m->lens = calloc(cap / 2, sizeof(*m->lens));
	if (!m->slots || !m->keys || !m->lens)
		return tp_error_set(TP_ENOMEM, "out of memory");
	memset(m->slots, 0xff, cap * sizeof(*m->slots));
	const cJSON *e;
	cJSON_ArrayForEach(e, vocab) {
		int32_t id;
		int rc;
		if (!json_id(e, &id))
			return bad("vocabulary id");
		if ((rc = set_token(t, id, e->string)) < 0)
			return rc;
	}
	return 0;
}

/* A merge is "left right" (older files) or ["left", "right"]. */
static int merge_parts(const cJSON *e, char *buf, size_t cap, const char **l, const char **r)
{
	if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
	    cJSON_IsString(cJSON_GetArrayItem(e, 0)) && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
		*l = cJSON_GetArrayItem(e, 0)->valuestring;
		*r = cJSON_GetArrayItem(e, 1)->valuestring;
		return 0;
	}
	if (!cJSON_IsString(e) || strlen(e->valuestring) >= cap)
		return bad("merge");
	strcpy(buf, e->valuestring);
	char *sp = strchr(buf + 1, ' '); /* a token may start with a space */
	if (!sp)
		return bad("merge");
	*sp = '\0';
	*l = buf;
	*r = sp + 1;
	return 0;
}

static int load_merges(tp_tokenizer *t, const cJSON *merges)
{
	int n = cJSON_GetArraySize(merges);
	if (merges && !cJSON_IsArray(merges))
		return bad("model.merges");
	if (n <= 0)
		return 0;
	merge_map *m = &t->merges;
	m->cap = pow2_above((size_t)n);
	m->keys = malloc(m->cap * sizeof(*m->keys));
	m->rank = malloc(m->cap * sizeof(*m->rank));
	m->merged = malloc(m->cap * sizeof(*m->merged));
	if (!m->keys || !m->rank || !m->merged)
		return tp_error_set(TP_ENOMEM, "out of memory");
	memset(m->keys, 0xff, m->cap * sizeof(*m->keys));
	char buf[1024], joined[1024];
	int rank = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, merges) {
		const char *l = NULL, *r = NULL;
		int rc = merge_parts(e, buf, sizeof(buf), &l, &r);
		if (rc < 0)
			return rc;
		int32_t a = tp_tok_vocab_get(&t->vocab, l, strlen(l));
		int32_t b = tp_tok_vocab_get(&t->vocab, r, strlen(r));
		if (snprintf(joined, sizeof(joined), "%s%s", l, r) >= (int)sizeof(joined))
			return bad("merge");
		int32_t ab = tp_tok_vocab_get(&t->vocab, joined, strlen(joined));
		if (a < 0 || b < 0 || ab < 0)
			return tp_error_set(TP_ECORRUPT, "tokenizer.json: merge '%s %s' uses "
					    "tokens missing from the vocabulary", l, r);
		merge_put(m, a, b, rank++, ab);
	}
	return 0;
}

static int load_added(tp_tokenizer *t, const cJSON *list)
{
	int n = cJSON_GetArraySize(list);
	if (n <= 0)
		return 0;
	if (!(t->added = calloc((size_t)n, sizeof(*t->added))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	const cJSON *e;
	cJSON_ArrayForEach(e, list) {
		added *a = &t->added[t->nadded];
		const char *s = json_str(e, "content");
		int rc;
		if (!s || !*s || !json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &a->id))
			return bad("added_tokens");
		if (!(a->text = strdup(s)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		a->len = strlen(s);
		a->special = json_bool(e, "special", false);
		t->added_first[(unsigned char)s[0]] = true;
		t->nadded++;
		if ((rc = set_token(t, a->id, s)) < 0)
			return rc;
	}
	return 0;
}

/* Run f over o, or over the members of a {"type": "Sequence"}. */
static int for_each_step(tp_tokenizer *t, const cJSON *o, const char *list_key,
			 int (*f)(tp_tokenizer *, const cJSON *))
{
	if (!o || cJSON_IsNull(o))
		return 0;
	const char *type = json_str(o, "type");
	if (type && strcmp(type, "Sequence") == 0) {
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, list_key)) {
			int rc = f(t, e);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	return f(t, o);
}

static int add_norm(tp_tokenizer *t, const cJSON *o)
{
	const char *type = json_str(o, "type");
	if (!type)
		return bad("normalizer");
	if (strcmp(type, "NFC") == 0)
		return 0; /* text is assumed precomposed already: see README */
	if (t->nnorm == MAX_STEPS)
		return bad("normalizer (too many steps)");
	step *s = &t->norm[t->nnorm];
	if (strcmp(type, "Prepend") == 0) {
		const char *p = json_str(o, "prepend");
		if (!p || !(s->a = strdup(p)))
			return p ? tp_error_set(TP_ENOMEM, "out of memory") : bad("Prepend");
		s->kind = STEP_PREPEND;
	} else if (strcmp(type, "Replace") == 0) {
		const char *pat = json_str(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "String");
		const char *content = json_str(o, "content");
		if (!pat || !*pat || !content)
			return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: Replace normalizer "
					    "with a regex pattern is not supported");
		if (!(s->a = strdup(pat)) || !(s->b = strdup(content)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		s->kind = STEP_REPLACE;
	} else {
		return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: normalizer %s is not "
				    "supported", type);
	}
	t->nnorm++;
	return 0;
}

static int add_split(step *s, const cJSON *o)
{
	const char *pat = json_str(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "Regex");
	const char *behavior = json_str(o, "behavior");
	if (!pat || !behavior || strcmp(behavior, "Isolated") != 0 || json_bool(o, "invert", false))
		return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: only Split pre-tokenizers "
				    "with a known regex and Isolated behavior are supported");
	s->kind = STEP_SPLIT;
	return tp_pretok_regex_from_pattern(pat, &s->re);
}

static int add_metaspace(step *s, const cJSON *o)
{
	const char *rep = json_str(o, "replacement"), *scheme = json_str(o, "prepend_scheme");
	if (!rep || strcmp(rep, METASPACE) != 0)
		return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: Metaspace replacement "
				    "other than U+2581");
	s->kind = STEP_METASPACE;
	s->split = json_bool(o, "split", true);
	/* Older files say add_prefix_space instead of prepend_scheme. */
	s->prepend = json_bool(o, "add_prefix_space", true) ? 2 : 0;
	if (scheme)
		s->prepend = strcmp(scheme, "never") == 0 ? 0 : strcmp(scheme, "first") == 0 ? 1 : 2;
	return 0;
}

static int add_pre(tp_tokenizer *t, const cJSON *o)
{
	const char *type = json_str(o, "type");
	if (!type)
		return bad("pre_tokenizer");
	if (t->npre == MAX_STEPS)
		return bad("pre_tokenizer (too many steps)");
	step *s = &t->pre[t->npre];
	int rc = 0;
	if (strcmp(type, "ByteLevel") == 0) {
		s->kind = STEP_BYTELEVEL;
		s->prefix_space = json_bool(o, "add_prefix_space", true);
		s->use_regex = json_bool(o, "use_regex", true);
		s->re = TP_PRETOK_GPT2;
		t->byte_level = true;
	} else if (strcmp(type, "Split") == 0) {
		rc = add_split(s, o);
	} else if (strcmp(type, "Metaspace") == 0) {
		rc = add_metaspace(s, o);
	} else {
		rc = tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: pre-tokenizer %s is not "
				  "supported", type);
	}
	if (rc == 0)
		t->npre++;
	return rc;
}

/* The id a TemplateProcessing puts before $A, if any. */
static int find_bos(tp_tokenizer *t, const cJSON *o)
{
	const char *type = json_str(o, "type");
	if (!type || strcmp(type, "TemplateProcessing") != 0)
		return 0;
	const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "single"), 0);
	const char *name = json_str(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
	if (!name)
		return 0;
	const cJSON *sp = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(o, "special_tokens"), name);
	if (!json_id(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(sp, "ids"), 0), &t->bos))
		return bad("post_processor special_tokens");
	return 0;
}

static int load_model(tp_tokenizer *t, const cJSON *model, const cJSON *added_list)
{
	const char *type = json_str(model, "type");
	int rc;
	if (!type || strcmp(type, "BPE") != 0)
		return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: model type %s is not "
				    "supported (only BPE is)", type ? type : "(none)");
	const char *prefix = json_str(model, "continuing_subword_prefix");
	const char *suffix = json_str(model, "end_of_word_suffix");
	if ((prefix && *prefix) || (suffix && *suffix))
		return tp_error_set(TP_EUNSUPPORTED, "tokenizer.json: BPE subword prefixes or "
				    "suffixes are not supported");
	t->byte_fallback = json_bool(model, "byte_fallback", false);
	t->ignore_merges = json_bool(model, "ignore_merges", false);
	if ((rc = load_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), added_list)) < 0 ||
	    (rc = load_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"))) < 0)
		return rc;
	const char *unk = json_str(model, "unk_token");
	t->unk = unk ? tp_tok_vocab_get(&t->vocab, unk, strlen(unk)) : -1;
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof(name), "<0x%02X>", b);
		t->byte_ids[b] = tp_tok_vocab_get(&t->vocab, name, strlen(name));
	}
	return 0;
}

static int parse_root(tp_tokenizer *t, const cJSON *root)
{
	const cJSON *added_list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
	int rc;
	if ((rc = load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), added_list)) < 0 ||
	    (rc = load_added(t, added_list)) < 0 ||
	    (rc = for_each_step(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
				"normalizers", add_norm)) < 0 ||
	    (rc = for_each_step(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
				"pretokenizers", add_pre)) < 0 ||
	    (rc = for_each_step(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"),
				"processors", find_bos)) < 0)
		return rc;
	if (t->byte_level && t->byte_fallback)
		return bad("model (byte-level with byte fallback)");
	return 0;
}

int tp_tokenizer_parse(tp_tokenizer **out, const char *json, size_t len)
{
	int rc;
	tp_tokenizer *t = calloc(1, sizeof(*t));
	if (!t)
		return tp_error_set(TP_ENOMEM, "out of memory");
	t->bos = -1;
	cJSON *root = cJSON_ParseWithLength(json, len);
	if (!cJSON_IsObject(root))
		rc = tp_error_set(TP_ECORRUPT, "tokenizer.json is not a JSON object");
	else
		rc = parse_root(t, root);
	cJSON_Delete(root);
	if (rc < 0) {
		tp_tokenizer_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

int tp_tokenizer_load(tp_tokenizer **out, const char *path)
{
	tp_buf json = TP_BUF_INIT(TP_TOKENIZER_JSON_MAX);
	int rc = tp_fs_read_regular(path, &json);
	if (rc == 0 && (rc = tp_tokenizer_parse(out, json.ptr ? json.ptr : "", json.len)) < 0)
		tp_error_wrap(rc, "%s", path);
	tp_buf_free(&json);
	return rc;
}

static void free_steps(step *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(s[i].a);
		free(s[i].b);
	}
}

void tp_tokenizer_free(tp_tokenizer *t)
{
	if (!t)
		return;
	for (size_t i = 0; t->vocab.keys && i < t->vocab.cap / 2; i++)
		free(t->vocab.keys[i]);
	free(t->vocab.keys);
	free(t->vocab.lens);
	free(t->vocab.slots);
	free(t->merges.keys);
	free(t->merges.rank);
	free(t->merges.merged);
	for (size_t i = 0; i < t->nadded; i++)
		free(t->added[i].text);
	free(t->added);
	free_steps(t->norm, t->nnorm);
	free_steps(t->pre, t->npre);
	free(t);
}

int32_t tp_tokenizer_bos(const tp_tokenizer *t)
{
	return t->bos;
}

const char *tp_tokenizer_token(const tp_tokenizer *t, int32_t id)
{
	return id >= 0 && (size_t)id < t->ntokens ? t->vocab.keys[id] : NULL;
}

size_t tp_tokenizer_size(const tp_tokenizer *t)
{
	return t->ntokens;
}

const char *tp_tokenizer_kind(const tp_tokenizer *t)
{
	return t->byte_level ? "byte-level BPE" : "sentencepiece BPE";
}
