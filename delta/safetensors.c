/* safetensors reader: 8-byte little-endian header length, JSON header,
 * then the tensors' bytes. Everything read is validated before use. */
#include "tp_delta.h"

#include "tp_array.h"
#include "tp_common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
	const char *name;
	unsigned size;
	bool is_float;
} dtypes[TP_DTYPE_COUNT] = {
	[TP_DTYPE_F64] = { "F64", 8, true },
	[TP_DTYPE_F32] = { "F32", 4, true },
	[TP_DTYPE_F16] = { "F16", 2, true },
	[TP_DTYPE_BF16] = { "BF16", 2, true },
	[TP_DTYPE_I64] = { "I64", 8, false },
	[TP_DTYPE_I32] = { "I32", 4, false },
	[TP_DTYPE_I16] = { "I16", 2, false },
	[TP_DTYPE_I8] = { "I8", 1, false },
	[TP_DTYPE_U8] = { "U8", 1, false },
	[TP_DTYPE_BOOL] = { "BOOL", 1, false },
	[TP_DTYPE_F8_E4M3] = { "F8_E4M3", 1, true },
	[TP_DTYPE_F8_E5M2] = { "F8_E5M2", 1, true },
};

const char *tp_dtype_name(tp_dtype d)
{
	return (unsigned)d < TP_DTYPE_COUNT ? dtypes[d].name : "?";
}

int tp_dtype_from_name(const char *name, tp_dtype *out)
{
	for (unsigned i = 0; i < TP_DTYPE_COUNT; i++) {
		if (strcmp(dtypes[i].name, name) == 0) {
			*out = (tp_dtype)i;
			return 0;
		}
	}
	return tp_error_set(TP_ENOTFOUND, "unknown dtype '%.32s'", name);
}

unsigned tp_dtype_size(tp_dtype d)
{
	return (unsigned)d < TP_DTYPE_COUNT ? dtypes[d].size : 0;
}

bool tp_dtype_is_float(tp_dtype d)
{
	return (unsigned)d < TP_DTYPE_COUNT && dtypes[d].is_float;
}

int tp_safetensors_header_size(const unsigned char first8[8], uint64_t file_size,
			       uint64_t *out)
{
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | first8[i];
	if (file_size < 8)
		return tp_error_set(TP_ECORRUPT, "safetensors: file shorter than 8 bytes");
	if (n > TP_ST_HEADER_MAX)
		return tp_error_set(TP_ECORRUPT, "safetensors: header length %llu over the %u cap",
				    (unsigned long long)n, TP_ST_HEADER_MAX);
	if (n + 8 > file_size)
		return tp_error_set(TP_ECORRUPT, "safetensors: header length %llu past end of file",
				    (unsigned long long)n);
	*out = n + 8;
	return 0;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_u64(const cJSON *j, uint64_t *out)
{
	if (!cJSON_IsNumber(j))
		return false;
	double v = j->valuedouble;
	if (!(v >= 0 && v <= 9007199254740992.0) || v != (double)(uint64_t)v)
		return false;
	*out = (uint64_t)v;
	return true;
}

static int parse_tensor(tp_st_tensor *t, const cJSON *j, uint64_t data_size)
{
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
	if (!cJSON_IsObject(j) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) ||
	    !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
		return tp_error_set(TP_ECORRUPT, "malformed entry");
	if (tp_dtype_from_name(dt->valuestring, &t->dtype) < 0)
		return tp_error_set(TP_ECORRUPT, "unknown dtype '%.32s'", dt->valuestring);
	int ndim = cJSON_GetArraySize(shape);
	if (ndim > TP_ST_MAX_DIMS)
		return tp_error_set(TP_ECORRUPT, "%d dimensions (max %d)", ndim, TP_ST_MAX_DIMS);
	t->ndim = (unsigned)ndim;
	size_t bytes = tp_dtype_size(t->dtype);
	for (int i = 0; i < ndim; i++) {
		uint64_t d;
		if (!json_u64(cJSON_GetArrayItem(shape, i), &d))
			return tp_error_set(TP_ECORRUPT, "bad shape");
		t->shape[i] = d;
		if (!tp_mul_ok(bytes, d, &bytes))
			return tp_error_set(TP_ECORRUPT, "shape overflows");
	}
	uint64_t b, e;
	if (!json_u64(cJSON_GetArrayItem(offs, 0), &b) ||
	    !json_u64(cJSON_GetArrayItem(offs, 1), &e) || b > e)
		return tp_error_set(TP_ECORRUPT, "bad data_offsets");
	if (e > data_size)
		return tp_error_set(TP_ECORRUPT, "data_offsets [%llu, %llu] past end of data (%llu)",
				    (unsigned long long)b, (unsigned long long)e,
				    (unsigned long long)data_size);
	if (e - b != bytes)
		return tp_error_set(TP_ECORRUPT, "data_offsets span %llu bytes, shape needs %zu",
				    (unsigned long long)(e - b), bytes);
	t->offset = b;
	t->size = e - b;
	return 0;
}

/* Every entry must be a string (the spec's str -> str map). */
static int parse_metadata(tp_safetensors *st, const cJSON *meta)
{
	if (!cJSON_IsObject(meta))
		return tp_error_set(TP_ECORRUPT, "safetensors: __metadata__ is not an object");
	/* cJSON keeps duplicate keys: a second map would be counted into arrays
	 * sized for itself alone. */
	if (st->meta_keys)
		return tp_error_set(TP_ECORRUPT, "safetensors: __metadata__ appears twice");
	size_t n = (size_t)cJSON_GetArraySize(meta);
	st->meta_keys = calloc(n ? n : 1, sizeof(char *));
	st->meta_values = calloc(n ? n : 1, sizeof(char *));
	if (!st->meta_keys || !st->meta_values)
		return tp_error_set(TP_ENOMEM, "out of memory");
	const cJSON *e;
	cJSON_ArrayForEach(e, meta) {
		if (!cJSON_IsString(e))
			return tp_error_set(TP_ECORRUPT, "safetensors: __metadata__ value is not a string");
		char *k = strdup(e->string), *v = strdup(e->valuestring);
		st->meta_keys[st->nmeta] = k;
		st->meta_values[st->nmeta++] = v;
		if (!k || !v)
			return tp_error_set(TP_ENOMEM, "out of memory");
	}
	return 0;
}

static int cmp_offset(const void *a, const void *b)
{
	const tp_st_tensor *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	/* Empty tensors share offsets; order them before the one that starts there. */
	return (x->size > y->size) - (x->size < y->size);
}

static int check_overlaps(const tp_safetensors *st)
{
	for (size_t i = 1; i < st->ntensors; i++) {
		const tp_st_tensor *p = &st->tensors[i - 1], *t = &st->tensors[i];
		if (p->offset + p->size > t->offset)
			return tp_error_set(TP_ECORRUPT, "safetensors: tensors '%.200s' and '%.200s' overlap",
					    p->name, t->name);
	}
	return 0;
}

static int parse_entries(tp_safetensors *st, const cJSON *root)
{
	size_t n = (size_t)cJSON_GetArraySize(root);
	if (n > TP_ST_MAX_TENSORS)
		return tp_error_set(TP_ETOOBIG, "safetensors: %zu tensors (max %u)", n, TP_ST_MAX_TENSORS);
	st->tensors = calloc(n ? n : 1, sizeof(*st->tensors));
	if (!st->tensors)
		return tp_error_set(TP_ENOMEM, "out of memory");
	uint64_t data_size = st->file_size - st->data_start;
	const cJSON *e;
	cJSON_ArrayForEach(e, root) {
		if (strcmp(e->string, "__metadata__") == 0) {
			int rc = parse_metadata(st, e);
			if (rc < 0)
				return rc;
			continue;
		}
		tp_st_tensor *t = &st->tensors[st->ntensors];
		if (!(t->name = strdup(e->string)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		st->ntensors++;
		int rc = parse_tensor(t, e, data_size);
		if (rc < 0)
			return tp_error_wrap(rc, "safetensors: tensor '%.200s'", t->name);
		t->offset += st->data_start;
	}
	qsort(st->tensors, st->ntensors, sizeof(*st->tensors), cmp_offset);
	return check_overlaps(st);
}

int tp_safetensors_parse(tp_safetensors **out, const void *head, size_t head_len,
			 uint64_t file_size)
{
	if (head_len < 8 || head_len > file_size)
		return tp_error_set(TP_ECORRUPT, "safetensors: truncated header");
	uint64_t hsize = 0;
	int rc = tp_safetensors_header_size(head, file_size, &hsize);
	if (rc < 0)
		return rc;
	if (hsize > head_len)
		return tp_error_set(TP_EINVAL, "safetensors: need %llu header bytes, got %zu",
				    (unsigned long long)hsize, head_len);
	tp_safetensors *st = calloc(1, sizeof(*st));
	cJSON *root = NULL;
	if (!st)
		return tp_error_set(TP_ENOMEM, "out of memory");
	st->file_size = file_size;
	st->data_start = hsize;
	const char *json = (const char *)head + 8;
	const char *end = NULL;
	root = cJSON_ParseWithLengthOpts(json, (size_t)hsize - 8, &end, false);
	if (!cJSON_IsObject(root)) {
		rc = tp_error_set(TP_ECORRUPT, "safetensors: header is not a JSON object");
		goto done;
	}
	rc = parse_entries(st, root);
done:
	cJSON_Delete(root);
	if (rc < 0)
		tp_safetensors_free(st);
	else
		*out = st;
	return rc;
}

int tp_safetensors_open(tp_safetensors **out, const char *path)
{
	unsigned char *head = NULL;
	int rc, fd;
	/* Not regular (a FIFO, a device): no header and no size to trust. */
	if ((rc = tp_fs_open_regular(path, &fd)) < 0)
		return rc;
	struct stat sb;
	size_t got;
	uint64_t hsize = 0;
	unsigned char first8[8];
	if (fstat(fd, &sb) != 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "stat %s", path);
		goto done;
	}
	if ((rc = tp_fs_read_full(fd, first8, 8, &got)) < 0 ||
	    (rc = tp_safetensors_header_size(first8, got == 8 ? (uint64_t)sb.st_size : 0,
					     &hsize)) < 0)
		goto done;
	if (!(head = malloc((size_t)hsize))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	memcpy(head, first8, 8);
	if ((rc = tp_fs_read_full(fd, head + 8, (size_t)hsize - 8, &got)) < 0)
		goto done;
	if (got != hsize - 8) {
		rc = tp_error_set(TP_ECORRUPT, "safetensors: truncated header");
		goto done;
	}
	rc = tp_safetensors_parse(out, head, (size_t)hsize, (uint64_t)sb.st_size);
done:
	if (rc < 0)
		tp_error_wrap(rc, "%s", path);
	free(head);
	close(fd);
	return rc;
}

void tp_safetensors_free(tp_safetensors *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->ntensors; i++)
		free(st->tensors[i].name);
	for (size_t i = 0; i < st->nmeta; i++) {
		free(st->meta_keys[i]);
		free(st->meta_values[i]);
	}
	free(st->tensors);
	free(st->meta_keys);
	free(st->meta_values);
	free(st);
}

const tp_st_tensor *tp_safetensors_find(const tp_safetensors *st, const char *name)
{
	for (size_t i = 0; i < st->ntensors; i++)
		if (strcmp(st->tensors[i].name, name) == 0)
			return &st->tensors[i];
	return NULL;
}

bool tp_safetensors_is_index(const char *path)
{
	size_t n = strlen(path), k = strlen(".index.json");
	return n >= k && strcmp(path + n - k, ".index.json") == 0;
}

#define INDEX_MAX_SHARDS 16384u

typedef tp_array(char *) shard_list;

/* Appends path to the list unless it is already there. */
static int add_shard(shard_list *l, const char *dir, const char *file)
{
	if (!*file || strchr(file, '/') || strcmp(file, ".") == 0 || strcmp(file, "..") == 0)
		return tp_error_set(TP_ECORRUPT, "index: shard name '%.200s' is not a plain file name", file);
	char *p;
	int rc = tp_path_join(&p, dir, file);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < l->len; i++) {
		if (strcmp(l->ptr[i], p) == 0) {
			free(p);
			return 0;
		}
	}
	/* The check above is quadratic: a hostile index must not turn it into
	 * a hang. Real models have at most a few thousand shards. */
	if ((rc = tp_array_push(l, p)) != 0) {
		free(p);
		return rc == TP_ETOOBIG ? tp_error_set(rc, "index: more than %u shard files",
						       INDEX_MAX_SHARDS)
					: rc;
	}
	return 0;
}

int tp_safetensors_index_shards(char ***out, size_t *n_out, const char *index_path)
{
	tp_buf b = TP_BUF_INIT(TP_ST_HEADER_MAX);
	shard_list paths = TP_ARRAY_INIT(INDEX_MAX_SHARDS);
	char *dir = strdup(index_path);
	cJSON *root = NULL;
	int rc;
	if (!dir)
		return tp_error_set(TP_ENOMEM, "out of memory");
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if ((rc = tp_fs_read_regular(index_path, &b)) < 0)
		goto done;
	root = cJSON_ParseWithLength(b.ptr ? b.ptr : "", b.len);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(map)) {
		rc = tp_error_set(TP_ECORRUPT, "index: no weight_map object");
		goto done;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, map) {
		if (!cJSON_IsString(e)) {
			rc = tp_error_set(TP_ECORRUPT, "index: weight_map value is not a string");
			goto done;
		}
		if ((rc = add_shard(&paths, dir, e->valuestring)) < 0)
			goto done;
	}
	if (paths.len == 0)
		rc = tp_error_set(TP_ECORRUPT, "index: weight_map is empty");
done:
	if (rc < 0) {
		tp_error_wrap(rc, "%s", index_path);
		tp_safetensors_shards_free(paths.ptr, paths.len);
	} else {
		*out = paths.ptr;
		*n_out = paths.len;
	}
	cJSON_Delete(root);
	tp_buf_free(&b);
	free(dir);
	return rc;
}

void tp_safetensors_shards_free(char **paths, size_t n)
{
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}
