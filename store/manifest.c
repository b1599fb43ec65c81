/* Manifests of delta objects: build, parse (untrusted input), canonical form. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_store.h"

#define MANIFEST_FORMAT "tenpak-object"
#define MANIFEST_VERSION 1
#define CODEC_NAME "tenpak-delta"
#define JSON_INT_MAX 9007199254740992.0 /* 2^53: exact in a JSON number */
#define TEXT_MAX 4096                   /* informational strings */

void tp_store_manifest_free(tp_store_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbases; i++)
		free(m->bases[i].path);
	free(m->bases);
	free(m->source);
	free(m->evidence);
	free(m->choice);
	free(m->signer);
	free(m->signature);
	free(m);
}

static void add_text(cJSON *obj, const char *key, const char *value)
{
	if (value)
		cJSON_AddStringToObject(obj, key, value);
}

int tp_store_manifest_build(const tp_store_manifest *m, char **json)
{
	cJSON *root = cJSON_CreateObject(), *bases = cJSON_CreateArray(), *why = cJSON_CreateObject();
	if (!root || !bases || !why) {
		cJSON_Delete(root);
		cJSON_Delete(bases);
		cJSON_Delete(why);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	cJSON_AddStringToObject(root, "format", MANIFEST_FORMAT);
	cJSON_AddNumberToObject(root, "version", MANIFEST_VERSION);
	cJSON_AddStringToObject(root, "codec", CODEC_NAME);
	cJSON_AddNumberToObject(root, "codec_version", m->codec_version);
	cJSON_AddStringToObject(root, "oid", m->oid);
	cJSON_AddNumberToObject(root, "size", (double)m->size);
	cJSON_AddNumberToObject(root, "depth", m->depth);
	for (size_t i = 0; i < m->nbases; i++) {
		cJSON *b = cJSON_CreateObject();
		cJSON_AddStringToObject(b, "oid", m->bases[i].oid);
		cJSON_AddNumberToObject(b, "size", (double)m->bases[i].size);
		add_text(b, "path", m->bases[i].path);
		cJSON_AddItemToArray(bases, b);
	}
	cJSON_AddItemToObject(root, "bases", bases);
	add_text(why, "source", m->source);
	add_text(why, "evidence", m->evidence);
	add_text(why, "choice", m->choice);
	cJSON_AddItemToObject(root, "lineage", why);
	if (m->signature) {
		cJSON *sig = cJSON_CreateObject();
		add_text(sig, "key", m->signer);
		add_text(sig, "ed25519", m->signature);
		cJSON_AddItemToObject(root, "signature", sig);
	}
	char *text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!text)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*json = strdup(text);
	cJSON_free(text);
	return *json ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static bool json_count(const cJSON *v, double max, uint64_t *out)
{
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > max ||
	    v->valuedouble != floor(v->valuedouble))
		return false;
	*out = (uint64_t)v->valuedouble;
	return true;
}

static int copy_text(const cJSON *parent, const char *key, char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(parent, key);
	if (!v)
		return 0;
	if (!cJSON_IsString(v) || strlen(v->valuestring) > TEXT_MAX)
		return tp_error_set(TP_ECORRUPT, "manifest: \"%s\" is not a short string", key);
	*out = strdup(v->valuestring);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static int oid_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A base named twice has no use, and a reader that rebuilt each name would
 * be led into work that doubles per level. */
static int check_distinct(const tp_store_manifest *m)
{
	if (m->nbases < 2)
		return 0;
	const char **v = malloc(m->nbases * sizeof(*v));
	int rc = 0;
	if (!v)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < m->nbases; i++)
		v[i] = m->bases[i].oid;
	qsort(v, m->nbases, sizeof(*v), oid_cmp);
	for (size_t i = 1; i < m->nbases && !rc; i++)
		if (strcmp(v[i - 1], v[i]) == 0)
			rc = tp_error_set(TP_ECORRUPT, "manifest: base %s is listed twice", v[i]);
	free(v);
	return rc;
}

static int parse_bases(tp_store_manifest *m, const cJSON *bases)
{
	int n = cJSON_GetArraySize(bases);
	if (!cJSON_IsArray(bases) || n < 0 || n > TP_STORE_MANIFEST_BASES_MAX)
		return tp_error_set(TP_ECORRUPT, "manifest: \"bases\" is not a list of at most %d",
				    TP_STORE_MANIFEST_BASES_MAX);
	if (n && !(m->bases = calloc((size_t)n, sizeof(*m->bases))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	const cJSON *b;
	cJSON_ArrayForEach(b, bases) {
		tp_store_manifest_base *mb = &m->bases[m->nbases];
		const cJSON *oid = cJSON_GetObjectItemCaseSensitive(b, "oid");
		if (!cJSON_IsString(oid) || !tp_oid_valid(oid->valuestring) ||
		    !json_count(cJSON_GetObjectItemCaseSensitive(b, "size"), JSON_INT_MAX, &mb->size))
			return tp_error_set(TP_ECORRUPT, "manifest: base %zu has no valid oid and size",
					    m->nbases);
		memcpy(mb->oid, oid->valuestring, sizeof(mb->oid));
		m->nbases++;
		int rc = copy_text(b, "path", &mb->path);
		if (rc)
			return rc;
	}
	return check_distinct(m);
}

static int parse_root(tp_store_manifest *m, const cJSON *root)
{
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
	const cJSON *codec = cJSON_GetObjectItemCaseSensitive(root, "codec");
	const cJSON *oid = cJSON_GetObjectItemCaseSensitive(root, "oid");
	uint64_t version, codec_version, depth;
	if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, MANIFEST_FORMAT) != 0)
		return tp_error_set(TP_ECORRUPT, "manifest: not a tenpak object manifest");
	if (!json_count(cJSON_GetObjectItemCaseSensitive(root, "version"), 1e6, &version) ||
	    version != MANIFEST_VERSION)
		return tp_error_set(TP_EUNSUPPORTED, "manifest: unsupported version");
	if (!cJSON_IsString(codec) || strcmp(codec->valuestring, CODEC_NAME) != 0 ||
	    !json_count(cJSON_GetObjectItemCaseSensitive(root, "codec_version"), 1e6, &codec_version))
		return tp_error_set(TP_EUNSUPPORTED, "manifest: unknown codec");
	if (!cJSON_IsString(oid) || !tp_oid_valid(oid->valuestring) ||
	    !json_count(cJSON_GetObjectItemCaseSensitive(root, "size"), JSON_INT_MAX, &m->size) ||
	    !json_count(cJSON_GetObjectItemCaseSensitive(root, "depth"), 1024, &depth))
		return tp_error_set(TP_ECORRUPT, "manifest: bad oid, size or depth");
	memcpy(m->oid, oid->valuestring, sizeof(m->oid));
	m->codec_version = (int)codec_version;
	m->depth = (int)depth;
	int rc = parse_bases(m, cJSON_GetObjectItemCaseSensitive(root, "bases"));
	const cJSON *why = cJSON_GetObjectItemCaseSensitive(root, "lineage");
	if (!rc && why) {
		if ((rc = copy_text(why, "source", &m->source)) || (rc = copy_text(why, "evidence", &m->evidence)) ||
		    (rc = copy_text(why, "choice", &m->choice)))
			return rc;
	}
	const cJSON *sig = cJSON_GetObjectItemCaseSensitive(root, "signature");
	if (!rc && sig) {
		if ((rc = copy_text(sig, "key", &m->signer)) || (rc = copy_text(sig, "ed25519", &m->signature)))
			return rc;
		if (!m->signer || !m->signature)
			return tp_error_set(TP_ECORRUPT, "manifest: incomplete signature");
	}
	return rc;
}

int tp_store_manifest_parse(tp_store_manifest **out, const char *json, size_t len)
{
	if (len > TP_STORE_MANIFEST_MAX)
		return tp_error_set(TP_ETOOBIG, "manifest larger than %u bytes", TP_STORE_MANIFEST_MAX);
	tp_store_manifest *m = calloc(1, sizeof(*m));
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	int rc;
	/* Nothing but white space may follow the object: a manifest has one
	 * reading only. */
	while (root && end < json + len && strchr(" \t\r\n", *end) && *end)
		end++;
	if (!m)
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	else if (!cJSON_IsObject(root) || end != json + len)
		rc = tp_error_set(TP_ECORRUPT, "manifest is not one JSON object");
	else
		rc = parse_root(m, root);
	cJSON_Delete(root);
	if (rc) {
		tp_store_manifest_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

int tp_store_manifest_canonical(const tp_store_manifest *m, tp_buf *out)
{
	int rc = tp_buf_addf(out, "tenpak-manifest-v1\noid %s\nsize %llu\ncodec %s %d\ndepth %d\n",
			     m->oid, (unsigned long long)m->size, CODEC_NAME, m->codec_version,
			     m->depth);
	for (size_t i = 0; !rc && i < m->nbases; i++)
		rc = tp_buf_addf(out, "base %s %llu\n", m->bases[i].oid,
				 (unsigned long long)m->bases[i].size);
	return rc;
}
