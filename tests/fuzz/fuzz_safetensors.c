/* Fuzz the safetensors header parser: model files are untrusted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tp_delta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the parser promises about a header it accepted. */
static void check(const tp_safetensors *st, uint64_t file_size)
{
	if (st->data_start < 8 || st->data_start > file_size)
		abort();
	uint64_t prev_end = st->data_start;
	for (size_t i = 0; i < st->ntensors; i++) {
		const tp_st_tensor *t = &st->tensors[i];
		if (t->offset < prev_end || t->size > file_size || t->offset > file_size - t->size)
			abort(); /* sorted, inside the file, not overlapping */
		if ((unsigned)t->dtype >= TP_DTYPE_COUNT || t->ndim > TP_ST_MAX_DIMS)
			abort();
		uint64_t n = tp_dtype_size(t->dtype);
		for (unsigned d = 0; d < t->ndim; d++)
			if (__builtin_mul_overflow(n, t->shape[d], &n))
				abort();
		if (n != t->size)
			abort();
		prev_end = t->offset + t->size;
		if (tp_safetensors_find(st, t->name) == NULL)
			abort();
		(void)tp_dtype_name(t->dtype);
	}
	for (size_t i = 0; i < st->nmeta; i++)
		if (!st->meta_keys[i] || !st->meta_values[i])
			abort();
}

static void parse(const uint8_t *data, size_t len, uint64_t file_size)
{
	/* Exact-size copy so any over-read past head_len is caught. */
	uint8_t *head = malloc(len ? len : 1);
	if (!head)
		return;
	memcpy(head, data, len);
	tp_safetensors *st = NULL;
	if (tp_safetensors_parse(&st, head, len, file_size) == 0) {
		check(st, file_size);
		tp_safetensors_free(st);
	}
	free(head);
}

/* The bytes as a sharded model's index, in memory: what the parser
 * accepts is a non-empty, capped list of distinct plain file names. */
static void index_text(const uint8_t *data, size_t len)
{
	char *text = malloc(len ? len : 1); /* exact size: over-reads are caught */
	char **names = NULL;
	size_t n = 0;
	if (!text)
		return;
	memcpy(text, data, len);
	if (tp_safetensors_index_parse(text, len, &names, &n) == 0) {
		if (n == 0 || n > TP_ST_INDEX_MAX_SHARDS)
			abort();
		for (size_t i = 0; i < n; i++) {
			if (!names[i][0] || strchr(names[i], '/') || !strcmp(names[i], ".") ||
			    !strcmp(names[i], ".."))
				abort();
			for (size_t k = 0; n <= 1024 && k < i; k++)
				if (!strcmp(names[i], names[k]))
					abort();
		}
		tp_safetensors_shards_free(names, n);
	}
	free(text);
}

/* The same bytes as files: a model file read through its fd path, and a
 * sharded model's index (both come from the repo). */
static void as_files(const uint8_t *data, size_t size)
{
	const char *model = fz_path(0, "model.safetensors");
	const char *index = fz_path(1, "model.safetensors.index.json");
	fz_write_file(model, data, size);
	tp_safetensors *st = NULL;
	if (tp_safetensors_open(&st, model) == 0) {
		check(st, size);
		tp_safetensors_free(st);
	}
	fz_write_file(index, data, size);
	char **shards = NULL;
	size_t n = 0;
	if (tp_safetensors_index_shards(&shards, &n, index) == 0) {
		/* Every shard stays in the index's directory. */
		size_t dlen = strlen(fz_dir());
		for (size_t i = 0; i < n; i++)
			if (strncmp(shards[i], fz_dir(), dlen) != 0 || shards[i][dlen] != '/' ||
			    strchr(shards[i] + dlen + 1, '/') || !strcmp(shards[i] + dlen + 1, "..") ||
			    !strcmp(shards[i] + dlen + 1, ".") || !shards[i][dlen + 1])
				abort();
		tp_safetensors_shards_free(shards, n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse(data, size, size);
	index_text(data, size);
	as_files(data, size);
	if (size < 8)
		return 0;
	/* As the reader does: header size from the first 8 bytes, then parse
	 * only that much of a file that may be much larger than the input. */
	uint64_t hs;
	uint64_t big = (uint64_t)size + ((uint64_t)data[size - 1] << 20);
	if (tp_safetensors_header_size(data, size, &hs) == 0) {
		if (hs < 8 || hs > size)
			abort();
		parse(data, (size_t)hs, size);
	}
	if (tp_safetensors_header_size(data, big, &hs) == 0 && hs <= size)
		parse(data, (size_t)hs, big);
	return 0;
}
