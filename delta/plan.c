/* The plan: the JSON layout at the start of a delta, and the inputs it
 * refers to. Everything parsed here comes from an untrusted delta. */
#include "delta_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BASES 65536u
#define MAX_SEGMENTS (2u * TP_ST_MAX_TENSORS + 1u)
#define MAX_SIZE 9007199254740992.0 /* 2^53: exact in a JSON number */

static const char *const xform_names[] = {
	[TP_DELTA_XFORM_AUTO] = "auto",   [TP_DELTA_XFORM_PLAIN] = "plain",
	[TP_DELTA_XFORM_PLANES] = "planes", [TP_DELTA_XFORM_XOR] = "xor",
	[TP_DELTA_XFORM_ULP] = "ulp",	    [TP_DELTA_XFORM_QGRID] = "qgrid",
};
/* Rows of a qgrid segment: at least 2 elements (which bounds a chunk's
 * scales by its length) and at most 2^32. */
#define QGRID_ROW_MAX 4294967296.0

const char *tp_delta_xform_name(tp_delta_xform x)
{
	return (unsigned)x <= TP_DELTA_XFORM_QGRID ? xform_names[x] : "?";
}

static int xform_from_name(const char *s, tp_delta_xform *out)
{
	for (unsigned i = TP_DELTA_XFORM_PLAIN; i <= TP_DELTA_XFORM_QGRID; i++) {
		if (strcmp(s, xform_names[i]) == 0) {
			*out = (tp_delta_xform)i;
			return 0;
		}
	}
	return tp_error_set(TP_ECORRUPT, "delta: unknown transform '%.32s'", s);
}

unsigned tp_delta_seg_width(const tp_delta_seg_info *s)
{
	return s->xform == TP_DELTA_XFORM_PLAIN ? 1 : tp_dtype_size(s->dtype);
}

uint64_t tp_delta_seg_chunks(const tp_delta_seg_info *s, uint64_t chunk_size)
{
	return (s->size + chunk_size - 1) / chunk_size;
}

void tp_delta_layout_free(tp_delta_layout *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbases; i++)
		free(m->bases[i].name);
	for (size_t i = 0; i < m->nsegs; i++)
		free(m->segs[i].name);
	free(m->bases);
	free(m->segs);
	free(m);
}

/* ---- writing ------------------------------------------------------------- */

static bool add_num(cJSON *o, const char *k, double v)
{
	return cJSON_AddNumberToObject(o, k, v) != NULL;
}

static bool add_segment(cJSON *arr, const tp_delta_seg_info *s, bool report)
{
	cJSON *o = cJSON_CreateObject();
	if (!o || !cJSON_AddItemToArray(arr, o))
		return cJSON_Delete(o), false;
	bool ok = add_num(o, "offset", (double)s->offset) && add_num(o, "size", (double)s->size) &&
		  cJSON_AddStringToObject(o, "xform", tp_delta_xform_name(s->xform));
	if (ok && s->name)
		ok = cJSON_AddStringToObject(o, "name", s->name) &&
		     cJSON_AddStringToObject(o, "dtype", tp_dtype_name(s->dtype));
	if (ok && s->base >= 0)
		ok = add_num(o, "base", s->base) && add_num(o, "base_offset", (double)s->base_offset);
	if (ok && s->xform == TP_DELTA_XFORM_QGRID)
		ok = add_num(o, "row", (double)s->row);
	if (ok && report)
		ok = add_num(o, "chunks", (double)s->chunks) &&
		     add_num(o, "same_chunks", (double)s->same_chunks) &&
		     add_num(o, "stored_bytes", (double)s->stored_bytes);
	return ok;
}

static bool add_base(cJSON *arr, const tp_delta_base_info *b)
{
	cJSON *o = cJSON_CreateObject();
	if (!o || !cJSON_AddItemToArray(arr, o))
		return cJSON_Delete(o), false;
	return cJSON_AddStringToObject(o, "name", b->name) && add_num(o, "size", (double)b->size) &&
	       cJSON_AddStringToObject(o, "fingerprint", b->fingerprint);
}

/* The plan, or with report also the sizes and hash (pretty-printed). */
static int layout_json(const tp_delta_layout *m, bool report, char **out)
{
	char sha[65];
	tp_sha256_hex(m->sha256, sha);
	cJSON *root = cJSON_CreateObject(), *bases = NULL, *segs = NULL;
	bool ok = root && cJSON_AddStringToObject(root, "format", "tenpak-delta") &&
		  add_num(root, "version", m->version) &&
		  add_num(root, "target_size", (double)m->target_size) &&
		  add_num(root, "chunk_size", (double)m->chunk_size);
	static const unsigned char none[32];
	if (ok && report)
		ok = add_num(root, "delta_size", (double)m->delta_size);
	/* Estimates have no hash. */
	if (ok && report && memcmp(m->sha256, none, sizeof(none)) != 0)
		ok = cJSON_AddStringToObject(root, "sha256", sha);
	ok = ok && (bases = cJSON_AddArrayToObject(root, "bases")) &&
	     (segs = cJSON_AddArrayToObject(root, "segments"));
	for (size_t i = 0; ok && i < m->nbases; i++)
		ok = add_base(bases, &m->bases[i]);
	for (size_t i = 0; ok && i < m->nsegs; i++)
		ok = add_segment(segs, &m->segs[i], report);
	char *s = !ok ? NULL : report ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!s)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*out = s;
	return 0;
}

int tp_delta_plan_write(const tp_delta_layout *m, char **out, size_t *len)
{
	int rc = layout_json(m, false, out);
	if (rc == 0)
		*len = strlen(*out);
	return rc;
}

int tp_delta_layout_to_json(const tp_delta_layout *m, char **out)
{
	return layout_json(m, true, out);
}

/* ---- parsing -------------------------------------------------------------- */

static bool get_u64(const cJSON *o, const char *k, uint64_t *out)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble <= MAX_SIZE) ||
	    j->valuedouble != (double)(uint64_t)j->valuedouble)
		return false;
	*out = (uint64_t)j->valuedouble;
	return true;
}

static const char *get_str(const cJSON *o, const char *k)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int parse_base(tp_delta_base_info *b, const cJSON *o)
{
	const char *name = get_str(o, "name"), *fp = get_str(o, "fingerprint");
	if (!name || !fp || !tp_oid_valid(fp) || !get_u64(o, "size", &b->size))
		return tp_error_set(TP_ECORRUPT, "delta: malformed base entry");
	memcpy(b->fingerprint, fp, sizeof(b->fingerprint));
	if (!(b->name = strdup(name)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	return 0;
}

/* Checks what the segment's chunks will rely on: a dtype that fits the
 * transform and a base range that exists. */
static int check_segment(const tp_delta_seg_info *s, const tp_delta_layout *m)
{
	bool is_float = s->name && tp_dtype_is_float(s->dtype);
	if (s->xform != TP_DELTA_XFORM_PLAIN && !is_float)
		return tp_error_set(TP_ECORRUPT, "delta: float transform on a non-float segment");
	if (s->size % tp_delta_seg_width(s))
		return tp_error_set(TP_ECORRUPT, "delta: segment size is not a whole number of elements");
	if (tp_delta_seg_chunks(s, m->chunk_size) > UINT32_MAX)
		return tp_error_set(TP_ECORRUPT, "delta: segment has too many chunks");
	bool needs_base = s->xform == TP_DELTA_XFORM_XOR || s->xform == TP_DELTA_XFORM_ULP ||
			  s->xform == TP_DELTA_XFORM_QGRID;
	if (s->xform == TP_DELTA_XFORM_QGRID &&
	    (m->version < 2 || (s->dtype != TP_DTYPE_BF16 && s->dtype != TP_DTYPE_F16) ||
	     s->row < 2 || (double)s->row > QGRID_ROW_MAX))
		return tp_error_set(TP_ECORRUPT, "delta: bad qgrid segment (version %u, row %llu)",
				    m->version, (unsigned long long)s->row);
	if (needs_base && s->base < 0)
		return tp_error_set(TP_ECORRUPT, "delta: %s segment without a base",
				    tp_delta_xform_name(s->xform));
	if (s->xform == TP_DELTA_XFORM_PLANES && s->base >= 0)
		return tp_error_set(TP_ECORRUPT, "delta: planes segment with a base");
	if (s->base >= 0 && (s->base_offset > m->bases[s->base].size ||
			     s->size > m->bases[s->base].size - s->base_offset))
		return tp_error_set(TP_ECORRUPT, "delta: base range past the end of the base");
	return 0;
}

static int parse_segment(tp_delta_seg_info *s, const cJSON *o, const tp_delta_layout *m)
{
	const char *x = get_str(o, "xform"), *name = get_str(o, "name"), *dt = get_str(o, "dtype");
	uint64_t base;
	s->base = -1;
	if (!x || !get_u64(o, "offset", &s->offset) || !get_u64(o, "size", &s->size) ||
	    (name && !dt))
		return tp_error_set(TP_ECORRUPT, "delta: malformed segment");
	int rc = xform_from_name(x, &s->xform);
	if (rc < 0)
		return rc;
	if (dt && tp_dtype_from_name(dt, &s->dtype) < 0)
		return tp_error_set(TP_ECORRUPT, "delta: unknown dtype '%.32s'", dt);
	if (name && !(s->name = strdup(name)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (cJSON_GetObjectItemCaseSensitive(o, "base")) {
		if (!get_u64(o, "base", &base) || base >= m->nbases ||
		    !get_u64(o, "base_offset", &s->base_offset))
			return tp_error_set(TP_ECORRUPT, "delta: bad base reference");
		s->base = (int)base;
	}
	if (s->xform == TP_DELTA_XFORM_QGRID && !get_u64(o, "row", &s->row))
		return tp_error_set(TP_ECORRUPT, "delta: qgrid segment without a row length");
	return check_segment(s, m);
}

static int parse_arrays(tp_delta_layout *m, const cJSON *bases, const cJSON *segs)
{
	size_t nb = (size_t)cJSON_GetArraySize(bases), ns = (size_t)cJSON_GetArraySize(segs);
	if (nb > MAX_BASES || ns > MAX_SEGMENTS)
		return tp_error_set(TP_ETOOBIG, "delta: too many bases or segments");
	m->bases = calloc(nb ? nb : 1, sizeof(*m->bases));
	m->segs = calloc(ns ? ns : 1, sizeof(*m->segs));
	if (!m->bases || !m->segs)
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc;
	const cJSON *e;
	cJSON_ArrayForEach(e, bases) {
		if ((rc = parse_base(&m->bases[m->nbases++], e)) < 0)
			return rc;
	}
	uint64_t pos = 0;
	cJSON_ArrayForEach(e, segs) {
		tp_delta_seg_info *s = &m->segs[m->nsegs++];
		if ((rc = parse_segment(s, e, m)) < 0)
			return rc;
		/* Segments tile the target exactly, in order. */
		if (s->offset != pos || s->size > m->target_size - pos)
			return tp_error_set(TP_ECORRUPT, "delta: segments do not tile the target");
		pos += s->size;
		s->chunks = tp_delta_seg_chunks(s, m->chunk_size);
	}
	if (pos != m->target_size)
		return tp_error_set(TP_ECORRUPT, "delta: segments do not cover the target");
	return 0;
}

int tp_delta_plan_parse(tp_delta_layout **out, const char *json, size_t len)
{
	tp_delta_layout *m = calloc(1, sizeof(*m));
	cJSON *root = cJSON_ParseWithLength(json, len);
	int rc = 0;
	uint64_t version;
	if (!m) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	const char *fmt = get_str(root, "format");
	const cJSON *bases = cJSON_GetObjectItemCaseSensitive(root, "bases");
	const cJSON *segs = cJSON_GetObjectItemCaseSensitive(root, "segments");
	if (!fmt || strcmp(fmt, "tenpak-delta") != 0 || !get_u64(root, "version", &version) ||
	    !get_u64(root, "target_size", &m->target_size) ||
	    !get_u64(root, "chunk_size", &m->chunk_size) || !cJSON_IsArray(bases) ||
	    !cJSON_IsArray(segs)) {
		rc = tp_error_set(TP_ECORRUPT, "delta: malformed plan");
		goto done;
	}
	if (version < TP_DELTA_VERSION || version > TP_DELTA_VERSION_MAX) {
		rc = tp_error_set(TP_EUNSUPPORTED,
				  "delta: format version %llu (this build reads %d to %d)",
				  (unsigned long long)version, TP_DELTA_VERSION, TP_DELTA_VERSION_MAX);
		goto done;
	}
	m->version = (uint32_t)version;
	if (m->chunk_size < TP_DELTA_CHUNK_MIN || m->chunk_size > TP_DELTA_CHUNK_MAX ||
	    m->chunk_size % 8) {
		rc = tp_error_set(TP_ECORRUPT, "delta: bad chunk size");
		goto done;
	}
	rc = parse_arrays(m, bases, segs);
done:
	cJSON_Delete(root);
	if (rc < 0)
		tp_delta_layout_free(m);
	else
		*out = m;
	return rc;
}

/* ---- bases ----------------------------------------------------------------- */

static int add_base_path(tp_base_set *b, const char *path)
{
	int rc = tp_array_reserve(b, 1);
	if (rc)
		return rc;
	tp_base *base = &b->ptr[b->len];
	base->st = NULL;
	if ((rc = tp_map_open(&base->map, path)) < 0)
		return rc;
	b->len++;
	/* A base that is not safetensors can still serve byte-identical chunks
	 * of nothing; it simply matches no tensor. */
	if (base->map.size >= 8 &&
	    tp_safetensors_parse(&base->st, base->map.ptr, (size_t)base->map.size,
				 base->map.size) < 0)
		tp_trace("delta: base %s is not safetensors: %s", path, tp_error_last());
	return 0;
}

int tp_base_set_open(tp_base_set *b, const char *const *paths, size_t n)
{
	*b = (tp_base_set)TP_ARRAY_INIT(SIZE_MAX);
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (!tp_safetensors_is_index(paths[i])) {
			rc = add_base_path(b, paths[i]);
			continue;
		}
		char **shards = NULL;
		size_t ns = 0;
		rc = tp_safetensors_index_shards(&shards, &ns, paths[i]);
		for (size_t k = 0; rc == 0 && k < ns; k++)
			rc = add_base_path(b, shards[k]);
		tp_safetensors_shards_free(shards, ns);
	}
	if (rc < 0)
		tp_base_set_close(b);
	return rc;
}

void tp_base_set_close(tp_base_set *b)
{
	for (size_t i = 0; i < b->len; i++) {
		tp_map_close(&b->ptr[i].map);
		tp_safetensors_free(b->ptr[i].st);
	}
	tp_array_clear(b);
}
