#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void tp_cli_json_text(const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
}

bool tp_cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int tp_cli_store_url(tp_lineage_repo *repo, const char *flag, char **url,
		     const char **source)
{
	const char *env = getenv("TENPAK_STORE");
	if (flag || (env && *env)) {
		*source = flag ? "--store" : "TENPAK_STORE";
		*url = strdup(flag ? flag : env);
		return *url ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	}
	int rc = tp_lineage_config_get(repo, "tenpak.store", url);
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

int tp_cli_parse(const char *cmd, int argc, char **argv, const tp_cli_opt *opts, int *npos)
{
	int out = 1;
	bool options_done = false;
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
		if (!o)
			return tp_cli_usage_error(cmd, "unknown option '%.*s'", (int)name_len, arg);
		if (!o->value) {
			if (eq)
				return tp_cli_usage_error(cmd, "option '%s' takes no value", o->name);
			*o->flag = true;
			continue;
		}
		if (eq) {
			*o->value = eq + 1;
		} else if (i + 1 < argc) {
			*o->value = argv[++i];
		} else {
			return tp_cli_usage_error(cmd, "option '%s' needs a value", o->name);
		}
	}
	*npos = out - 1;
	return TP_CLI_PARSED;
}

static int config_from_git(void *ctx, const char *key, char **value)
{
	char full[128];
	snprintf(full, sizeof(full), "tenpak.%s", key);
	return tp_lineage_config_get(ctx, full, value);
}

int tp_cli_store_open(tp_lineage_repo *repo, const char *flag, tp_store **store, char **url_out)
{
	char *url = NULL;
	const char *source = NULL;
	int rc = tp_cli_store_url(repo, flag, &url, &source);
	if (rc)
		return rc;
	rc = tp_store_open_with(store, url, config_from_git, repo);
	if (!rc)
		tp_trace("store %s (from %s)", url, source);
	if (!rc && url_out)
		*url_out = url;
	else
		free(url);
	return rc;
}
