#include "tp_store.h"

#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

int tp_store_init(tp_store *s, const tp_store_backend *b, const char *url)
{
	const char *name = b->scheme ? b->scheme : "(unnamed)";
	/* As GIT_ERROR_CHECK_VERSION: a table from another header would be
	 * read through the wrong slots. */
	if (b->version != TP_STORE_BACKEND_VERSION)
		return tp_error_set(TP_EINVAL, "store backend \"%s\" was built for backend interface "
				    "version %u; this tenpak has version %u", name, b->version,
				    TP_STORE_BACKEND_VERSION);
	if (!b->scheme || !b->stat || !b->get || !b->put || !b->remove || !b->list || !b->free)
		return tp_error_set(TP_EINVAL, "store backend \"%s\" lacks an operation", name);
	char *copy = strdup(url);
	if (!copy)
		return tp_error_set(TP_ENOMEM, "out of memory");
	s->backend = b;
	s->url = copy;
	return 0;
}

int tp_store_open(tp_store **out, const char *url)
{
	return tp_store_open_with(out, url, NULL, NULL);
}

int tp_store_config_get(tp_store_config_fn config, void *ctx, const char *key, char **value)
{
	if (!config)
		return TP_ENOTFOUND;
	return config(ctx, key, value);
}

static int open_url(tp_store **out, const char *url, bool create, tp_store_config_fn config,
		    void *config_ctx)
{
	if (!url || !*url)
		return tp_error_set(TP_ECONFIG, "store URL is empty");
	if (strncmp(url, "file://", 7) == 0 || url[0] == '/')
		return tp_store_file_open(out, url, create);
	if (strncmp(url, "s3://", 5) == 0)
		return tp_store_s3_open(out, url, config, config_ctx);
	const char *colon = strstr(url, "://");
	if (colon)
		return tp_error_set(TP_ECONFIG, "store URL \"%s\": unsupported scheme \"%.*s\" "
				    "(supported: file://, s3://, or an absolute path)",
				    url, (int)(colon - url), url);
	return tp_error_set(TP_ECONFIG, "store URL \"%s\" is not an absolute path or a "
			    "file:// URL", url);
}

int tp_store_open_with(tp_store **out, const char *url, tp_store_config_fn config,
		       void *config_ctx)
{
	return open_url(out, url, true, config, config_ctx);
}

int tp_store_open_existing(tp_store **out, const char *url, tp_store_config_fn config,
			   void *config_ctx)
{
	return open_url(out, url, false, config, config_ctx);
}

void tp_store_free(tp_store *s)
{
	if (s)
		s->backend->free(s);
}

const char *tp_store_url(const tp_store *s)
{
	return s->url;
}

const char *tp_store_kind_name(tp_store_kind k)
{
	switch (k) {
	case TP_STORE_KIND_WHOLE_ZSTD: return "whole-zstd";
	case TP_STORE_KIND_DELTA: return "delta";
	case TP_STORE_KIND_WHOLE_CODEC: return "whole-codec";
	default: return "unknown";
	}
}

int tp_store_object_absent(const tp_store *s, const char *oid)
{
	/* The usual cause is a clone pointed at another store than the push. */
	return tp_error_set(TP_ENOTFOUND, "object %s is not in store %s: is this the right store? "
			    "(tenpak.store / TENPAK_STORE)", oid, s->url);
}

static bool key_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

bool tp_store_key_valid(const char *key)
{
	size_t len = key ? strlen(key) : 0;
	if (len == 0 || len > TP_STORE_KEY_MAX)
		return false;
	const char *comp = key;
	for (const char *p = key;; p++) {
		if (*p == '/' || *p == '\0') {
			size_t n = (size_t)(p - comp);
			if (n == 0 || (n == 1 && comp[0] == '.') ||
			    (n == 2 && comp[0] == '.' && comp[1] == '.'))
				return false;
			if (*p == '\0')
				return true;
			comp = p + 1;
		} else if (!key_char_ok(*p)) {
			return false;
		}
	}
}

static int check_key(const char *key)
{
	if (tp_store_key_valid(key))
		return 0;
	return tp_error_set(TP_EINVAL, "invalid store key \"%.80s\"", key ? key : "");
}

int tp_store_stat(tp_store *s, const char *key, uint64_t *size)
{
	int rc = check_key(key);
	return rc ? rc : s->backend->stat(s, key, size);
}

int tp_store_get(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		 const tp_store_sink *sink)
{
	int rc = check_key(key);
	return rc ? rc : s->backend->get(s, key, offset, len, sink);
}

int tp_store_put(tp_store *s, const char *key, const tp_store_source *src)
{
	int rc = check_key(key);
	return rc ? rc : s->backend->put(s, key, src);
}

int tp_store_remove(tp_store *s, const char *key)
{
	int rc = check_key(key);
	return rc ? rc : s->backend->remove(s, key);
}

int tp_store_list(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx)
{
	return s->backend->list(s, prefix, fn, ctx);
}

int tp_store_default_url(char **out)
{
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	/* The XDG spec says a relative XDG_DATA_HOME is invalid: ignore it. */
	if (xdg && xdg[0] == '/')
		return tp_path_join(out, xdg, "tenpak/store");
	if (home && home[0] == '/')
		return tp_path_join(out, home, ".local/share/tenpak/store");
	return tp_error_set(TP_ECONFIG, "cannot choose a default store: neither "
			    "XDG_DATA_HOME nor HOME is an absolute path; set tenpak.store");
}
