/* Fuzz store key validation and s3:// URL + setting parsing. Opening an
 * s3 store does no network I/O; file:// is left out because opening one
 * creates directories. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tp_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Settings asked of "git config": lines "s3.key=value" after the URL. */
typedef struct cfg {
	char *text; /* NUL-separated lines */
	size_t len;
} cfg;

static int config(void *ctx, const char *key, char **value)
{
	cfg *c = ctx;
	size_t klen = strlen(key);
	for (size_t i = 0; i < c->len; i += strlen(c->text + i) + 1) {
		const char *l = c->text + i;
		if (strncmp(l, key, klen) == 0 && l[klen] == '=') {
			*value = strdup(l + klen + 1);
			return *value ? 0 : TP_ENOMEM;
		}
	}
	return TP_ENOTFOUND;
}

/* The key rules, stated independently of store.c. */
static bool key_ok(const char *k)
{
	size_t len = strlen(k);
	if (len == 0 || len > TP_STORE_KEY_MAX || k[0] == '/' || k[len - 1] == '/')
		return false;
	for (const char *p = k; *p; p++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '/'))
			return false;
		if (ch == '/' && p[1] == '/')
			return false;
	}
	for (const char *comp = k; comp; ) {
		const char *slash = strchr(comp, '/');
		size_t n = slash ? (size_t)(slash - comp) : strlen(comp);
		if ((n == 1 && comp[0] == '.') || (n == 2 && comp[0] == '.' && comp[1] == '.'))
			return false;
		comp = slash ? slash + 1 : NULL;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;
	if (!inited) {
		/* Credentials from the environment, so open never reads ~/.aws. */
		setenv("AWS_ACCESS_KEY_ID", "AKIDFUZZ", 1);
		setenv("AWS_SECRET_ACCESS_KEY", "fuzzsecret", 1);
		unsetenv("AWS_REGION");
		unsetenv("AWS_DEFAULT_REGION");
		inited = true;
	}
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	if (tp_store_key_valid(s) != key_ok(s))
		abort();

	/* First line: the URL after "s3://"; later lines: config settings. */
	char *nl = strchr(s, '\n');
	cfg c = { NULL, 0 };
	if (nl) {
		*nl = '\0';
		c.text = nl + 1;
		c.len = (size_t)(s + size - c.text);
		for (size_t i = 0; i < c.len; i++)
			if (c.text[i] == '\n')
				c.text[i] = '\0';
	}
	size_t ulen = strlen(s);
	char *url = malloc(ulen + 6);
	if (url) {
		memcpy(url, "s3://", 5);
		memcpy(url + 5, s, ulen + 1);
		tp_store *st = NULL;
		if (tp_store_open_with(&st, url, nl ? config : NULL, &c) == 0) {
			if (strcmp(tp_store_url(st), url) != 0)
				abort();
			tp_store_free(st);
		}
		free(url);
	}
	free(s);
	return 0;
}
