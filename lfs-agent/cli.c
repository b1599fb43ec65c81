#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tp_store.h"

int tp_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "tenpak: %s%s", cmd ? cmd : "", cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, " (see 'tenpak %s --help')\n", cmd);
	else
		fprintf(stderr, " (see 'tenpak --help')\n");
	return TP_EXIT_USAGE;
}

int tp_cli_fail(const char *cmd)
{
	fprintf(stderr, "tenpak: %s: %s\n", cmd, tp_error_last());
	return TP_EXIT_FAIL;
}

int tp_cli_json_print(cJSON *doc)
{
	char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
	cJSON_Delete(doc);
	if (!text)
		return tp_error_set(TP_ENOMEM, "out of memory");
	puts(text);
	free(text);
	return 0;
}

bool tp_cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

bool tp_cli_parse_size(const char *s, uint64_t min, uint64_t max, size_t *out)
{
	uint64_t v;
	if (s && tp_parse_u64(s, min, max, &v) < 0)
		return false;
	if (s)
		*out = (size_t)v;
	return true;
}

int tp_cli_read_text(const char *path, tp_buf *text)
{
	/* Not tp_fs_read_regular: a text may name a pipe (/dev/stdin). */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
	int rc = tp_fs_read_fd(fd, path, text);
	close(fd);
	return rc;
}

int tp_cli_self_path(char **out)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n < 0)
		return tp_error_set_errno(TP_EIO, errno, "cannot find tenpak's own path");
	buf[n] = '\0';
	*out = strdup(buf);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

int tp_cli_store_url(tp_git_repo *repo, const char *flag, char **url,
		     const char **source)
{
	const char *env = getenv("TENPAK_STORE");
	if (flag || (env && *env)) {
		*source = flag ? "--store" : "TENPAK_STORE";
		*url = strdup(flag ? flag : env);
		return *url ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	}
	int rc = tp_git_config_get(repo, "tenpak.store", url);
	if (rc == 0) {
		*source = "git config tenpak.store";
		return 0;
	}
	if (rc != TP_ENOTFOUND)
		return rc;
	*source = "default";
	return tp_store_default_url(url);
}

static const tp_cli_opt *find_opt(const tp_cli_opt *opts, const char *arg, size_t len)
{
	for (; opts->name; opts++)
		if (strlen(opts->name) == len && strncmp(opts->name, arg, len) == 0)
			return opts;
	return NULL;
}

static tp_cli_list *find_list(tp_cli_list *lists, const char *arg, size_t len)
{
	for (; lists && lists->name; lists++)
		if (strlen(lists->name) == len && strncmp(lists->name, arg, len) == 0)
			return lists;
	return NULL;
}

int tp_cli_parse_lists(const char *cmd, int argc, char **argv, const tp_cli_opt *opts,
		       tp_cli_list *lists, int *npos)
{
	int out = 1;
	bool options_done = false;
	for (tp_cli_list *l = lists; l && l->name; l++)
		l->count = 0;
	for (int i = 1; i < argc; i++) {
		char *arg = argv[i];
		if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
			argv[out++] = arg;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			options_done = true;
			continue;
		}
		if (tp_cli_is_help(arg))
			return TP_CLI_HELP;
		const char *eq = strchr(arg, '=');
		size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
		const tp_cli_opt *o = find_opt(opts, arg, name_len);
		tp_cli_list *l = o ? NULL : find_list(lists, arg, name_len);
		if (!o && !l)
			return tp_cli_usage_error(cmd, "unknown option '%.*s'", (int)name_len, arg);
		if (o && !o->value) {
			if (eq)
				return tp_cli_usage_error(cmd, "option '%s' takes no value", o->name);
			*o->flag = true;
			continue;
		}
		const char *name = o ? o->name : l->name, *v;
		if (eq)
			v = eq + 1;
		else if (i + 1 < argc)
			v = argv[++i];
		else
			return tp_cli_usage_error(cmd, "option '%s' needs a value", name);
		if (o)
			*o->value = v;
		else if (l->count < l->max)
			l->values[l->count++] = v;
		else
			return tp_cli_usage_error(cmd, "too many %s options (at most %zu)", name,
						  l->max);
	}
	*npos = out - 1;
	return TP_CLI_PARSED;
}

int tp_cli_parse(const char *cmd, int argc, char **argv, const tp_cli_opt *opts, int *npos)
{
	return tp_cli_parse_lists(cmd, argc, argv, opts, NULL, npos);
}

static int config_from_git(void *ctx, const char *key, char **value)
{
	char full[128];
	snprintf(full, sizeof(full), "tenpak.%s", key);
	return tp_git_config_get(ctx, full, value);
}

static int store_open(tp_git_repo *repo, const char *flag, bool create, tp_store **store,
		      char **url_out)
{
	char *url = NULL;
	const char *source = NULL;
	int rc = tp_cli_store_url(repo, flag, &url, &source);
	if (rc)
		return rc;
	rc = create ? tp_store_open_with(store, url, config_from_git, repo)
		    : tp_store_open_existing(store, url, config_from_git, repo);
	if (rc == TP_ENOTFOUND)
		tp_error_set(rc, "no store at %s (from %s): run 'tenpak install --store %s' or push "
			     "first", url, source, url);
	if (!rc)
		tp_trace("store %s (from %s)", url, source);
	if (!rc && url_out)
		*url_out = url;
	else
		free(url);
	return rc;
}

int tp_cli_store_open(tp_git_repo *repo, const char *flag, tp_store **store, char **url_out)
{
	return store_open(repo, flag, true, store, url_out);
}

int tp_cli_store_open_existing(tp_git_repo *repo, const char *flag, tp_store **store,
			       char **url_out)
{
	return store_open(repo, flag, false, store, url_out);
}

int tp_cli_stored_load(tp_store *s, const char *oid, tp_cli_stored *out)
{
	tp_cli_stored st = { 0 };
	char *text = NULL;
	int rc = tp_store_object_manifest(s, oid, &st.info, &text);
	if (rc == TP_ENOTFOUND)
		return tp_store_object_absent(s, oid);
	if (!rc && text && (rc = tp_store_manifest_parse(&st.manifest, text, strlen(text))) != 0)
		tp_error_wrap(rc, "object %s", oid);
	if (!rc && st.manifest &&
	    (strcmp(st.manifest->oid, oid) != 0 || st.manifest->size != st.info.size))
		rc = tp_error_set(TP_ECORRUPT, "object %s: its manifest describes another object", oid);
	free(text);
	if (rc) {
		tp_cli_stored_clear(&st);
		return rc;
	}
	*out = st;
	return 0;
}

void tp_cli_stored_clear(tp_cli_stored *st)
{
	tp_store_manifest_free(st->manifest);
	st->manifest = NULL;
}

static void add_text(cJSON *obj, const char *key, const char *value)
{
	if (value)
		cJSON_AddStringToObject(obj, key, value);
}

void tp_cli_stored_json(cJSON *obj, const tp_cli_stored *st)
{
	const tp_store_manifest *m = st->manifest;
	cJSON_AddStringToObject(obj, "kind", tp_store_kind_name(st->info.kind));
	cJSON_AddNumberToObject(obj, "size", (double)st->info.size);
	cJSON_AddNumberToObject(obj, "stored_bytes", (double)st->info.stored_size);
	if (!m)
		return;
	cJSON_AddNumberToObject(obj, "codec_version", m->codec_version);
	cJSON_AddNumberToObject(obj, "depth", m->depth);
	cJSON *bases = cJSON_AddArrayToObject(obj, "bases");
	for (size_t i = 0; bases && i < m->nbases; i++) {
		cJSON *b = cJSON_CreateObject();
		cJSON_AddStringToObject(b, "oid", m->bases[i].oid);
		cJSON_AddNumberToObject(b, "size", (double)m->bases[i].size);
		add_text(b, "path", m->bases[i].path);
		cJSON_AddItemToArray(bases, b);
	}
	add_text(obj, "source", m->source);
	add_text(obj, "evidence", m->evidence);
	add_text(obj, "reason", m->choice);
}
