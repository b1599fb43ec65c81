/* Fuzz the delta container decoder (plan, frames, planes) and the store's
 * delta-object manifest parser: both come from the store, untrusted. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delta_internal.h"
#include "fuzz_util.h"
#include "tp_delta.h"
#include "tp_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A small fixed safetensors base, so that seeds made against it reach the
 * xor/ulp/same paths. Its bytes depend on nothing but this code. */
static size_t make_base(uint8_t **out)
{
	static const char json[] =
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]},"
		"\"b\":{\"dtype\":\"BF16\",\"shape\":[8,16],\"data_offsets\":[256,512]},"
		"\"c\":{\"dtype\":\"I8\",\"shape\":[32],\"data_offsets\":[512,544]},"
		"\"d\":{\"dtype\":\"F16\",\"shape\":[16],\"data_offsets\":[544,576]}}";
	size_t hlen = sizeof(json) - 1, n = 8 + hlen + 576;
	uint8_t *b = malloc(n);
	if (!b)
		abort();
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
	memcpy(b + 8, json, hlen);
	uint32_t x = 0x12345678u;
	for (size_t i = 8 + hlen; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		b[i] = (uint8_t)(x >> 24);
	}
	*out = b;
	return n;
}

/* The input as a stored object: header, whole-object zstd stream, or a
 * delta object's manifest and codec stream. */
static void fuzz_object(const uint8_t *data, size_t size, int out_fd)
{
	static const char oid[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	fz_mem in = { data, size, 0 };
	tp_store_source src = { fz_mem_read, &in };
	tp_store *s = NULL;
	tp_store_object_info info;
	char *manifest = NULL;
	if (tp_store_mem_new(&s) != 0)
		abort();
	tp_store_object_key(key, oid);
	/* Uneven pieces, as a network backend would deliver them, so the
	 * object reader's header and frame reassembly is exercised. */
	if (tp_store_put(s, key, &src) != 0 || tp_store_mem_set_pieces(s, size % 13 + 1, 4096) != 0)
		abort();
	if (tp_store_object_stat(s, oid, &info) != 0)
		goto done;
	if (info.kind == TP_STORE_KIND_WHOLE_ZSTD) {
		tp_store_object_get_fd(s, oid, info.size, out_fd, NULL, NULL);
		goto done;
	}
	if (tp_store_object_manifest(s, oid, &info, &manifest) != 0)
		goto done;
	if (!manifest || info.payload_offset > size)
		abort(); /* a delta kind always has a manifest inside the object */
	tp_store_manifest *sm = NULL;
	if (tp_store_manifest_parse(&sm, manifest, strlen(manifest)) == 0)
		tp_store_manifest_free(sm);
	free(manifest);
	tp_store_object_get_payload(s, oid, &info, out_fd);
	fz_mem r = { data + info.payload_offset, size - info.payload_offset, 0 };
	tp_delta_layout *dm = NULL;
	if (tp_delta_inspect(&dm, fz_mem_read, &r) == 0)
		tp_delta_layout_free(dm);
	tp_store_stats st;
	tp_store_stats_collect(s, &st);
done:
	tp_store_free(s);
}

/* The input as qgrid planes (format v2): whatever codes and finite scales
 * they hold decode to something that codes back exactly; a scale that is
 * not finite is refused. First 3 bytes: dtype, row - 2, first. */
static void fuzz_qgrid(const uint8_t *data, size_t size)
{
	if (size < 8)
		return;
	tp_dtype dt = data[0] & 1 ? TP_DTYPE_F16 : TP_DTYPE_BF16;
	uint64_t row = 2 + (uint64_t)data[1] * (data[1] > 200 ? 997 : 1), first = data[2];
	data += 3;
	size -= 3;
	/* n elements: 3n bytes of planes, 4 per scale, 2n of base. */
	size_t n = size / 6;
	while (n && 5 * n + 4 * tp_qgrid_nscales(first, n, row) > size)
		n--;
	if (!n)
		return;
	size_t ns = tp_qgrid_nscales(first, n, row);
	uint8_t *planes = malloc(5 * n + 4 * n + 64), *t = malloc(2 * n), *back = malloc(2 * n);
	if (!planes || !t || !back)
		abort();
	memcpy(planes, data, 3 * n + 4 * ns);
	const uint8_t *base = data + 3 * n + 4 * ns;
	int rc = tp_qgrid_merge(dt, planes, base, n, first, row, t);
	bool finite = true;
	for (size_t k = 0; k < ns; k++) {
		uint32_t u = 0;
		for (unsigned p = 0; p < 4; p++)
			u |= (uint32_t)planes[3 * n + p * ns + k] << (8 * (3 - p));
		finite = finite && (u & 0x7F800000) != 0x7F800000;
	}
	if ((rc == 0) != finite)
		abort();
	if (rc == 0) {
		if (tp_qgrid_split(dt, t, base, n, first, row, planes) != 0 ||
		    tp_qgrid_merge(dt, planes, base, n, first, row, back) != 0 ||
		    memcmp(t, back, 2 * n) != 0)
			abort();
	}
	free(planes);
	free(t);
	free(back);
}

static const char *base_path;
static int null_fd = -1;

static void init(void)
{
	uint8_t *b;
	size_t n = make_base(&b);
	/* For making seeds: `TP_FUZZ_DUMP_BASE=f fuzz-replay-delta_decode` writes
	 * the base that seeds' deltas must be made against. */
	const char *dump = getenv("TP_FUZZ_DUMP_BASE");
	if (dump)
		fz_write_file(dump, b, n);
	base_path = fz_path(0, "base.safetensors");
	fz_write_file(base_path, b, n);
	free(b);
	null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null_fd < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (null_fd < 0)
		init();
	tp_delta_opts o = { .threads = 1 };

	fz_mem m = { data, size, 0 };
	tp_delta_layout *man = NULL;
	if (tp_delta_inspect(&man, fz_mem_read, &m) == 0) {
		char *json = NULL;
		if (tp_delta_layout_to_json(man, &json) == 0)
			free(json);
		tp_delta_layout_free(man);
	}

	m.pos = 0;
	tp_delta_apply(fz_mem_read, &m, NULL, 0, null_fd, &o, NULL);
	m.pos = 0;
	const char *bases[1] = { base_path };
	tp_delta_apply(fz_mem_read, &m, bases, 1, null_fd, &o, NULL);

	/* Exact-size copy so an over-read past len is caught. */
	char *copy = malloc(size ? size : 1);
	if (copy) {
		memcpy(copy, data, size);
		tp_store_manifest *sm = NULL;
		if (tp_store_manifest_parse(&sm, copy, size) == 0) {
			char *json = NULL;
			tp_buf canon = TP_BUF_INIT(1u << 24);
			if (tp_store_manifest_build(sm, &json) == 0) {
				/* What we build must parse back. */
				tp_store_manifest *again = NULL;
				if (tp_store_manifest_parse(&again, json, strlen(json)) != 0)
					abort();
				tp_store_manifest_free(again);
				free(json);
			}
			tp_store_manifest_canonical(sm, &canon);
			tp_buf_free(&canon);
			tp_store_manifest_free(sm);
		}
		free(copy);
	}
	fuzz_object(data, size, null_fd);
	fuzz_qgrid(data, size);
	return 0;
}
