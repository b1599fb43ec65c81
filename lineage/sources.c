/*
 * The sources of names, most trusted first: overrides in git config
 * (tenpak.<path-or-glob>.base), then metadata next to the target in its
 * commit's tree: config.json (_name_or_path, base_model), the model card's
 * YAML front matter (base_model), adapter_config.json
 * (base_model_name_or_path). Unreadable or malformed metadata is absent.
 */
#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "lineage_internal.h"

typedef struct override_ctx {
	tp_lineage_search *s;
	int rc;
} override_ctx;

/* tenpak.<pattern>.base entries whose pattern matches the target. (Matched
 * by hand: libgit2's regex-based glob iterator leaks with PCRE2.) */
static int override_entry(const git_config_entry *e, void *vctx)
{
	override_ctx *o = vctx;
	static const char pre[] = "tenpak.", suf[] = ".base";
	size_t len = strlen(e->name);
	if (len <= sizeof(pre) - 1 + sizeof(suf) - 1 || strncmp(e->name, pre, sizeof(pre) - 1) ||
	    strcmp(e->name + len - (sizeof(suf) - 1), suf))
		return 0;
	char pattern[1024];
	size_t plen = len - (sizeof(pre) - 1) - (sizeof(suf) - 1);
	if (plen >= sizeof(pattern))
		return 0;
	memcpy(pattern, e->name + sizeof(pre) - 1, plen);
	pattern[plen] = '\0';
	if (fnmatch(pattern, o->s->out->target.path, FNM_PATHNAME) != 0)
		return 0;
	char *where = tp_lineage_where_text("git config tenpak.%s.base", pattern);
	o->rc = where ? tp_lineage_add_named(o->s, TP_LINEAGE_SOURCE_OVERRIDE, e->value, where)
		      : tp_error_set(TP_ENOMEM, "out of memory");
	free(where);
	return o->rc ? -1 : 0;
}

int tp_lineage_from_overrides(tp_lineage_search *s)
{
	git_config *cfg = NULL;
	override_ctx o = { .s = s };
	if (git_repository_config_snapshot(&cfg, s->repo->repo) != 0)
		return tp_git_fail(TP_ECONFIG, "reading git config");
	git_config_foreach(cfg, override_entry, &o);
	git_config_free(cfg);
	return o.rc;
}

/* The metadata file name in the target's directory into text, its path
 * into *path. 1 when it is absent, not a blob or too large: it names no
 * base. */
static int metadata_read(tp_lineage_search *s, const char *name, char **path, tp_buf *text)
{
	*path = tp_lineage_path_in(s->dir, name);
	int rc = *path ? tp_lineage_tree_read(s->tree, *path, TP_LINEAGE_METADATA_MAX, text)
		       : TP_ENOMEM;
	if (rc) {
		free(*path);
		*path = NULL;
		return rc == TP_ENOMEM ? rc : 1;
	}
	return 0;
}

static int from_json_field(tp_lineage_search *s, const char *file, const char *field)
{
	char *path;
	tp_buf text;
	int rc = metadata_read(s, file, &path, &text);
	if (rc)
		return rc > 0 ? 0 : rc;
	cJSON *root = cJSON_ParseWithLength(text.ptr, text.len);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
	if (cJSON_IsString(v) && v->valuestring[0]) {
		char *where = tp_lineage_where_text("%s: %s", path, field);
		rc = where ? tp_lineage_add_named(s, TP_LINEAGE_SOURCE_METADATA, v->valuestring,
						  where)
			   : tp_error_set(TP_ENOMEM, "out of memory");
		free(where);
	}
	cJSON_Delete(root);
	tp_buf_free(&text);
	free(path);
	return rc;
}

/* Strip YAML quoting and flow-list punctuation around one scalar. */
static char *yaml_scalar(char *a)
{
	char *b = a + strlen(a);
	while (a < b && strchr(" \t[\"'", *a))
		a++;
	while (b > a && strchr(" \t\r]\"',", b[-1]))
		b--;
	*b = '\0';
	return a;
}

/* base_model in the model card's YAML front matter: a string, a flow list
 * [a, b] or a block list of "- a" lines. */
static int from_model_card(tp_lineage_search *s)
{
	char *path;
	tp_buf text;
	int rc = metadata_read(s, "README.md", &path, &text);
	if (rc)
		return rc > 0 ? 0 : rc;
	char *where = tp_lineage_where_text("%s: base_model", path);
	if (!where)
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	bool in_front = false, in_list = false;
	char *save = NULL;
	for (char *line = strtok_r(text.ptr, "\n", &save); line && !rc;
	     line = strtok_r(NULL, "\n", &save)) {
		line[strcspn(line, "\r")] = '\0';
		if (strcmp(line, "---") == 0) {
			if (in_front)
				break;
			in_front = true;
			continue;
		}
		if (!in_front)
			break; /* no front matter */
		if (in_list && (line[0] == ' ' || line[0] == '-')) {
			char *item = strchr(line, '-');
			if (item)
				rc = tp_lineage_add_named(s, TP_LINEAGE_SOURCE_METADATA,
							  yaml_scalar(item + 1), where);
			continue;
		}
		in_list = false;
		if (strncmp(line, "base_model:", 11) != 0)
			continue;
		char *value = yaml_scalar(line + 11);
		if (!*value) {
			in_list = true;
			continue;
		}
		for (char *save2 = NULL, *item = strtok_r(value, ",", &save2); item && !rc;
		     item = strtok_r(NULL, ",", &save2))
			rc = tp_lineage_add_named(s, TP_LINEAGE_SOURCE_METADATA, yaml_scalar(item),
						  where);
	}
	tp_buf_free(&text);
	free(where);
	free(path);
	return rc;
}

int tp_lineage_from_metadata(tp_lineage_search *s)
{
	int rc = from_json_field(s, "config.json", "_name_or_path");
	if (!rc)
		rc = from_json_field(s, "config.json", "base_model");
	if (!rc)
		rc = from_model_card(s);
	if (!rc)
		rc = from_json_field(s, "adapter_config.json", "base_model_name_or_path");
	return rc;
}
