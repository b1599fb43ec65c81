/* safetensors reader: valid headers parse, malformed ones fail cleanly. */
#include "testutil.h"

#include <unistd.h>

/* Parse a header given as JSON, followed by data_len zero bytes. */
static int parse_json(const char *json, size_t data_len, tp_safetensors **out)
{
	size_t jl = strlen(json), n = 8 + jl + data_len;
	uint8_t *buf = calloc(1, n);
	uint64_t len = jl;
	memcpy(buf, &len, 8);
	memcpy(buf + 8, json, jl);
	tp_safetensors *st = NULL;
	int rc = tp_safetensors_parse(&st, buf, n, n);
	free(buf);
	if (out)
		*out = st;
	else
		tp_safetensors_free(st);
	return rc;
}

static void test_valid(void)
{
	tp_safetensors *st = NULL;
	const char *json =
		"{\"__metadata__\":{\"format\":\"pt\"},"
		"\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
		"\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
		"\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[28,28]},"
		"\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[28,32]}}";
	CHECK(parse_json(json, 32, &st) == 0);
	if (!st)
		return;
	CHECK(st->ntensors == 4);
	CHECK(st->nmeta == 1 && strcmp(st->meta_keys[0], "format") == 0 &&
	      strcmp(st->meta_values[0], "pt") == 0);
	CHECK(strcmp(st->tensors[0].name, "a") == 0); /* sorted by offset */
	CHECK(st->tensors[0].offset == st->data_start);
	const tp_st_tensor *b = tp_safetensors_find(st, "b");
	CHECK(b && b->dtype == TP_DTYPE_BF16 && b->ndim == 2 && b->shape[1] == 3 && b->size == 12);
	const tp_st_tensor *s = tp_safetensors_find(st, "s");
	CHECK(s && s->ndim == 0 && s->size == 4);
	CHECK(tp_safetensors_find(st, "zz") == NULL);
	tp_safetensors_free(st);
}

static void test_dtypes(void)
{
	static const char *names[] = { "F64", "F32", "F16", "BF16", "I64", "I32",
				       "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2" };
	static const unsigned sizes[] = { 8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 1, 1 };
	for (unsigned i = 0; i < 12; i++) {
		tp_dtype d;
		CHECK(tp_dtype_from_name(names[i], &d) == 0 && tp_dtype_size(d) == sizes[i]);
		char json[200];
		snprintf(json, sizeof(json), "{\"t\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%u]}}",
			 names[i], 3 * sizes[i]);
		CHECK(parse_json(json, 3 * sizes[i], NULL) == 0);
	}
	tp_dtype d;
	CHECK(tp_dtype_from_name("F128", &d) == TP_ENOTFOUND);
}

static void test_rejects(void)
{
	static const char *bad[] = {
		"[]",
		"{\"t\":1}",
		"{\"t\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",   /* size mismatch */
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",   /* reversed */
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[60,64]}}", /* past end */
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}",
		"{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		"\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", /* overlap */
		"{\"__metadata__\":{\"k\":1}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", /* truncated JSON */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_json(bad[i], 16, NULL);
		CHECK(rc < 0);
		if (rc == 0)
			fprintf(stderr, "accepted bad header #%zu: %s\n", i, bad[i]);
	}
	/* Header length beyond the cap or the file. */
	uint8_t buf[16] = { 0 };
	uint64_t huge = (uint64_t)TP_ST_HEADER_MAX + 1;
	memcpy(buf, &huge, 8);
	tp_safetensors *st = NULL;
	CHECK(tp_safetensors_parse(&st, buf, sizeof(buf), sizeof(buf)) == TP_ECORRUPT && !st);
	uint64_t past = 9;
	memcpy(buf, &past, 8);
	CHECK(tp_safetensors_parse(&st, buf, sizeof(buf), sizeof(buf)) == TP_ECORRUPT);
	CHECK(tp_safetensors_parse(&st, buf, 4, 4) == TP_ECORRUPT);
}

/* Every prefix and single-byte corruption of a valid file fails or parses,
 * without crashing. */
static void test_fuzz(void)
{
	const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
			   "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]}}";
	size_t jl = strlen(json), n = 8 + jl + 12;
	uint8_t *buf = calloc(1, n), *copy = malloc(n);
	uint64_t len = jl;
	memcpy(buf, &len, 8);
	memcpy(buf + 8, json, jl);
	uint64_t seed = 1;
	int ok = 0;
	for (size_t i = 0; i < n; i++) {
		for (int k = 0; k < 4; k++) {
			memcpy(copy, buf, n);
			copy[i] ^= (uint8_t)(1 + t_rand(&seed) % 255);
			tp_safetensors *st = NULL;
			if (tp_safetensors_parse(&st, copy, n, n) == 0)
				ok++;
			tp_safetensors_free(st);
		}
		tp_safetensors *st = NULL;
		CHECK(tp_safetensors_parse(&st, buf, i, i) < 0);
	}
	CHECK(ok < (int)n * 4);
	free(buf);
	free(copy);
}

static void test_index(void)
{
	char dir[] = "/tmp/tp-st-test-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[256];
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	const char *idx = "{\"metadata\":{\"total_size\":8},\"weight_map\":{"
			  "\"a\":\"model-00001-of-00002.safetensors\","
			  "\"b\":\"model-00002-of-00002.safetensors\","
			  "\"c\":\"model-00001-of-00002.safetensors\"}}";
	t_write_bytes(path, idx, strlen(idx));
	char **shards = NULL;
	size_t n = 0;
	CHECK(tp_safetensors_is_index(path));
	CHECK(tp_safetensors_index_shards(&shards, &n, path) == 0 && n == 2);
	if (n == 2)
		CHECK(strstr(shards[0], "model-00001-of-00002.safetensors") &&
		      strstr(shards[1], "model-00002-of-00002.safetensors"));
	tp_safetensors_shards_free(shards, n);
	const char *evil = "{\"weight_map\":{\"a\":\"../../etc/passwd\"}}";
	t_write_bytes(path, evil, strlen(evil));
	CHECK(tp_safetensors_index_shards(&shards, &n, path) == TP_ECORRUPT);
	unlink(path);
	rmdir(dir);
}

/* The pure index parser every reader of an index shares (delta's base
 * sets, lineage's base lookup). */
static int index_count(const char *json, size_t len)
{
	char **names = NULL;
	size_t n = 0;
	int rc = tp_safetensors_index_parse(json, len, &names, &n);
	if (rc == 0) {
		size_t dups = 0;
		for (size_t i = 0; i < n; i++)
			for (size_t k = 0; k < i; k++)
				dups += strcmp(names[i], names[k]) == 0;
		CHECK(dups == 0);
		tp_safetensors_shards_free(names, n);
	}
	return rc ? rc : (int)n;
}

#define INDEX_COUNT(json) index_count(json, strlen(json))

static void test_index_parse(void)
{
	char **names = NULL;
	size_t n = 0;
	const char *ok = "{\"weight_map\":{\"a\":\"s1\",\"b\":\"s2\",\"c\":\"s1\"}}";
	CHECK(tp_safetensors_index_parse(ok, strlen(ok), &names, &n) == 0 && n == 2);
	if (n == 2) {
		CHECK(strcmp(names[0], "s1") == 0);
		CHECK(strcmp(names[1], "s2") == 0);
	}
	tp_safetensors_shards_free(names, n);
	/* Bytes past len are not read: the same text cut short is bad JSON. */
	CHECK(index_count(ok, strlen(ok) - 2) == TP_ECORRUPT);
	CHECK(index_count(NULL, 0) == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"../x\"}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"s1\",\"b\":\"d/s2\"}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"/etc/passwd\"}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\".\"}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"\"}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"s1\",\"b\":7}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{\"a\":\"s1\",\"b\":[\"s2\"]}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":[\"s1\"]}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"weight_map\":{}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("{\"metadata\":{}}") == TP_ECORRUPT);
	CHECK(INDEX_COUNT("[]") == TP_ECORRUPT);

	/* The shard cap: exactly at it parses; one more distinct name does
	 * not, however many duplicates come first. */
	size_t cap = 64 + (TP_ST_INDEX_MAX_SHARDS + 1) * 24u + 1000u * 12u;
	char *big = malloc(cap);
	size_t len = (size_t)snprintf(big, cap, "{\"weight_map\":{");
	for (unsigned i = 0; i < 1000; i++)
		len += (size_t)snprintf(big + len, cap - len, "\"d%u\":\"s0\",", i);
	for (unsigned i = 0; i < TP_ST_INDEX_MAX_SHARDS; i++)
		len += (size_t)snprintf(big + len, cap - len, "%s\"t%u\":\"s%u\"", i ? "," : "", i, i);
	size_t at_cap = len;
	snprintf(big + len, cap - len, "}}");
	CHECK(index_count(big, strlen(big)) == (int)TP_ST_INDEX_MAX_SHARDS);
	snprintf(big + at_cap, cap - at_cap, ",\"x\":\"s%u\"}}", TP_ST_INDEX_MAX_SHARDS);
	CHECK(index_count(big, strlen(big)) == TP_ETOOBIG);
	free(big);

	/* Every distinct name up to the cap, then 4 MiB of the last one again:
	 * each repeat is a binary search (this took 13 s when each was
	 * compared with every name before it). */
	cap = 4u << 20;
	big = malloc(cap);
	len = (size_t)snprintf(big, cap, "{\"weight_map\":{");
	for (unsigned i = 0; i < TP_ST_INDEX_MAX_SHARDS; i++)
		len += (size_t)snprintf(big + len, cap - len, "\"t%u\":\"s%u\",", i, i);
	for (unsigned i = 0; len + 64 < cap; i++)
		len += (size_t)snprintf(big + len, cap - len, "\"d%u\":\"s%u\",", i,
					TP_ST_INDEX_MAX_SHARDS - 1);
	snprintf(big + len, cap - len, "\"z\":\"s0\"}}");
	CHECK(index_count(big, strlen(big)) == (int)TP_ST_INDEX_MAX_SHARDS);
	free(big);
}

int main(void)
{
	TP_TEST_RUN(test_valid);
	TP_TEST_RUN(test_dtypes);
	TP_TEST_RUN(test_rejects);
	TP_TEST_RUN(test_fuzz);
	TP_TEST_RUN(test_index);
	TP_TEST_RUN(test_index_parse);
	return TP_TEST_RESULT();
}
