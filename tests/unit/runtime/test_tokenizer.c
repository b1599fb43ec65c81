/* Tokenizers: the regex splits, both BPE flavours with hand-made
 * vocabularies, the fixture tokenizer, and clear errors. */
#include "../tp_test.h"
#include "evaltest.h"
#include "pretok.h"

#include <cjson/cJSON.h>

static const char *data_dir;

/* Pieces of text joined with '|'. */
static const char *split(tp_pretok_regex re, const char *text)
{
	static char out[1024];
	uint32_t cps[256];
	size_t offs[257], n = 0, len = strlen(text), o = 0;
	for (size_t i = 0; i < len && n < 256; n++) {
		offs[n] = i;
		i += tp_utf8_decode(text + i, len - i, &cps[n]);
	}
	offs[n] = len;
	for (size_t i = 0; i < n;) {
		size_t m = tp_pretok_match(re, cps, n, i);
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%.*s", i ? "|" : "",
				      (int)(offs[i + m] - offs[i]), text + offs[i]);
		i += m;
	}
	return out;
}

static void test_regex_splits(void)
{
	const char *t = "Hello world's 12345\n\n  x";
	CHECK_STR(split(TP_PRETOK_GPT2, t), "Hello| world|'s| 12345|\n\n | x");
	CHECK_STR(split(TP_PRETOK_LLAMA3, t), "Hello| world|'s| |123|45|\n\n| | x");
	CHECK_STR(split(TP_PRETOK_QWEN2, t), "Hello| world|'s| |1|2|3|4|5|\n\n| | x");
	CHECK_STR(split(TP_PRETOK_GPT2, "a...!\n\nb"), "a|...!|\n|\n|b");
	CHECK_STR(split(TP_PRETOK_LLAMA3, "a...!\n\nb"), "a|...!\n\n|b");
	CHECK_STR(split(TP_PRETOK_LLAMA3, "WORLD'S\tend"), "WORLD|'S|\tend");
	CHECK_STR(split(TP_PRETOK_GPT2, "WORLD'S"), "WORLD|'|S");
	CHECK_STR(split(TP_PRETOK_GPT2, "na\xc3\xafve caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xd9\xa3  "),
		  "na\xc3\xafve| caf\xc3\xa9| \xe6\x9d\xb1\xe4\xba\xac| \xd9\xa3|  ");
	tp_pretok_regex re;
	CHECK_EQ_INT(tp_pretok_regex_from_pattern("\\w+|\\s+", &re), TP_EUNSUPPORTED);
}

/* Load tests/data/tokenizers/NAME; a failure counts and returns NULL. */
static tp_tokenizer *load(const char *name)
{
	tp_tokenizer *t = NULL;
	if (tp_tokenizer_load(&t, tpt_path("%s/tokenizers/%s", data_dir, name)) < 0)
		fprintf(stderr, "%s: %s\n", name, tp_error_last());
	CHECK(t != NULL);
	return t;
}

/* Encode text and compare with want[0..nwant). */
static void check_ids(const tp_tokenizer *t, const char *text, bool special,
		      const int32_t *want, size_t nwant)
{
	int32_t *ids = NULL;
	size_t n = 0;
	CHECK_EQ_INT(tp_tokenizer_encode(t, text, strlen(text), special, &ids, &n), 0);
	bool same = n == nwant && (n == 0 || memcmp(ids, want, n * sizeof(*ids)) == 0);
	if (!same) {
		fprintf(stderr, "   \"%s\" gave", text);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %d", (int)ids[i]);
		fprintf(stderr, "\n");
	}
	CHECK(same);
	free(ids);
}

#define IDS(...) (const int32_t[]){ __VA_ARGS__ }, sizeof((const int32_t[]){ __VA_ARGS__ }) / sizeof(int32_t)

static void test_gpt2_style(void)
{
	tp_tokenizer *t = load("gpt2-style.json");
	if (!t)
		return;
	CHECK_STR(tp_tokenizer_kind(t), "byte-level BPE");
	CHECK_EQ_INT(tp_tokenizer_bos(t), -1);
	CHECK_EQ_INT(tp_tokenizer_size(t), 271);
	/* "1 2" outranks "Ġ 1"; the lone space before " 123" is its own piece */
	check_ids(t, "the cat's in the hat  123", false,
		  IDS(259, 262, 263, 265, 258, 267, 32, 32, 268, 51));
	check_ids(t, "\xc3\xa9", false, IDS(195, 169)); /* é as its two bytes */
	check_ids(t, "hi<|endoftext|>", true, IDS(104, 105, 270));
	check_ids(t, "hi<|end", false, IDS(104, 105, 60, 124, 101, 110, 100));
	check_ids(t, "", false, NULL, 0);
	CHECK_STR(tp_tokenizer_token(t, 262), "\xc4\xa0" "cat");
	tp_tokenizer_free(t);
}

static void test_llama3_style(void)
{
	tp_tokenizer *t = load("llama3-style.json");
	if (!t)
		return;
	CHECK_EQ_INT(tp_tokenizer_bos(t), 300);
	/* ignore_merges: whole words in the vocabulary win without merges */
	check_ids(t, "Hello world's 12345\n\n  x", false,
		  IDS(256, 257, 39, 115, 32, 49, 50, 51, 52, 53, 10, 10, 32, 32, 120));
	check_ids(t, "Hey", false, IDS(258, 121));
	check_ids(t, "<|begin_of_text|>Hello", true, IDS(300, 256));
	tp_model_config c = { .bos_id = -1 };
	CHECK_EQ_INT(tp_runtime_choose_bos(&c, t), 300);
	c.bos_id = 7;
	CHECK_EQ_INT(tp_runtime_choose_bos(&c, t), 7);
	tp_tokenizer_free(t);
}

static void test_sentencepiece_style(void)
{
	tp_tokenizer *t = load("sentencepiece-style.json");
	if (!t)
		return;
	CHECK_STR(tp_tokenizer_kind(t), "sentencepiece BPE");
	CHECK_EQ_INT(tp_tokenizer_bos(t), 1);
	check_ids(t, "the cat", false, IDS(268, 271));
	check_ids(t, "the  cats", false, IDS(268, 259, 271, 265));
	/* 😀 has no piece: its four UTF-8 bytes fall back to <0xXX> */
	check_ids(t, "the \xf0\x9f\x98\x80", false, IDS(268, 259, 243, 162, 155, 131));
	/* legacy Prepend normalizer: every segment gets its ▁ */
	check_ids(t, "<s>the", true, IDS(1, 268));
	check_ids(t, "<s>", false, IDS(259, 63, 265, 65));
	tp_tokenizer_free(t);
}

static void test_metaspace_style(void)
{
	tp_tokenizer *t = load("metaspace-style.json");
	if (!t)
		return;
	check_ids(t, "the cat", false, IDS(268, 271));
	/* prepend_scheme "first": only at the start of the text */
	check_ids(t, "<s>the", true, IDS(1, 260, 266));
	check_ids(t, " the", false, IDS(268));
	tp_tokenizer_free(t);
}

static void test_unsupported(void)
{
	static const char *bad[] = {
		"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}",
		"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
		"\"normalizer\":{\"type\":\"Lowercase\"}}",
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
		"\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tp_tokenizer *t = NULL;
		CHECK_EQ_INT(tp_tokenizer_parse(&t, bad[i], strlen(bad[i])), TP_EUNSUPPORTED);
		CHECK(t == NULL);
	}
	tp_tokenizer *t = NULL;
	const char *missing = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}";
	CHECK_EQ_INT(tp_tokenizer_parse(&t, missing, strlen(missing)), TP_ECORRUPT);
	const char *no_unk = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
	CHECK_EQ_INT(tp_tokenizer_parse(&t, no_unk, strlen(no_unk)), 0);
	int32_t *ids = NULL;
	size_t n;
	CHECK_EQ_INT(tp_tokenizer_encode(t, "ab", 2, false, &ids, &n), TP_EINVAL);
	tp_tokenizer_free(t);
}

/* The fixture's byte-level tokenizer: ids are the bytes, as in PyTorch. */
static void test_fixture_text(void)
{
	size_t n = 0, nref = 0;
	int32_t *ids = tpt_heldout_ids(data_dir, &n);
	float *ref = tpt_read_f32(tpt_path("%s/eval/logprobs_base_BF16.safetensors", data_dir),
				  "ids", &nref);
	FILE *f = fopen(tpt_path("%s/eval/heldout.txt", data_dir), "rb");
	unsigned char text[8192];
	size_t len = f ? fread(text, 1, sizeof(text), f) : 0;
	if (f)
		fclose(f);
	CHECK(ids && ref && nref == 128);
	CHECK_EQ_INT(n, len);
	size_t bad = 0;
	for (size_t i = 0; ids && i < n && i < len; i++)
		bad += ids[i] != text[i];
	for (size_t i = 0; ids && ref && nref == 128 && n >= 1064 && i < 64; i++)
		bad += ids[i] != (int32_t)ref[i] || ids[1000 + i] != (int32_t)ref[64 + i];
	CHECK_EQ_INT(bad, 0);
	free(ids);
	free(ref);
}

/* Encode every case of cases.json and compare with its ids. */
static void check_cases(const tp_tokenizer *t, const cJSON *root)
{
	const cJSON *c;
	size_t ok = 0, n = 0;
	cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
		const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"));
		const cJSON *want = cJSON_GetObjectItem(c, "ids");
		int32_t *ids = NULL;
		size_t k = 0;
		bool same = text && tp_tokenizer_encode(t, text, strlen(text), true, &ids, &k) == 0 &&
			    (int)k == cJSON_GetArraySize(want);
		for (size_t i = 0; same && i < k; i++)
			same = ids[i] == (int32_t)cJSON_GetArrayItem(want, (int)i)->valuedouble;
		if (!same)
			fprintf(stderr, "   mismatch on \"%.40s\"\n", text ? text : "?");
		ok += same;
		n++;
		free(ids);
	}
	fprintf(stderr, "   %zu of %zu cases match\n", ok, n);
	CHECK(n > 0 && ok == n);
}

/*
 * A real tokenizer from an npm package (real_name), against ids from
 * Hugging Face's Tokenizers.js (tests/data/tokenizers/real/NAME/cases.json).
 * Its tokenizer.json is not kept in the repo: main checks it is there.
 */
static const char *real_name;

static void test_real_tokenizer(void)
{
	const char *dir = tpt_path("%s/tokenizers/real/%s", data_dir, real_name);
	char buf[1 << 15];
	FILE *f = fopen(tpt_path("%s/cases.json", dir), "rb");
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	cJSON *root = cJSON_ParseWithLength(buf, n);
	tp_tokenizer *t = NULL;
	CHECK(root != NULL);
	if (root) {
		CHECK_EQ_INT(tp_tokenizer_load(&t, tpt_path("%s/tokenizer.json", dir)), 0);
		if (t) {
			fprintf(stderr, "   %s (%s, %zu tokens):", real_name, tp_tokenizer_kind(t),
				tp_tokenizer_size(t));
			CHECK_EQ_INT(tp_tokenizer_bos(t),
				     cJSON_GetObjectItem(root, "bos")->valuedouble);
			check_cases(t, root);
		}
	}
	tp_tokenizer_free(t);
	cJSON_Delete(root);
}

/* DATA: the hand-made tokenizers. DATA NAME: only real/NAME, a test of its
 * own that is skipped when its tokenizer.json has not been copied in. */
int main(int argc, char **argv)
{
	data_dir = argc > 1 ? argv[1] : "tests/data";
	if (argc > 2) {
		real_name = argv[2];
		if (!tpt_have(tpt_path("%s/tokenizers/real/%s/tokenizer.json", data_dir, real_name),
			      "tokenizer.json (see tests/data/tokenizers/README.md)"))
			return TPT_SKIP;
		TP_TEST_RUN(test_real_tokenizer);
		return TP_TEST_RESULT();
	}
	TP_TEST_RUN(test_regex_splits);
	TP_TEST_RUN(test_gpt2_style);
	TP_TEST_RUN(test_llama3_style);
	TP_TEST_RUN(test_sentencepiece_style);
	TP_TEST_RUN(test_metaspace_style);
	TP_TEST_RUN(test_unsupported);
	TP_TEST_RUN(test_fixture_text);
	return TP_TEST_RESULT();
}
