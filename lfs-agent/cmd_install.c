/* tenpak install / uninstall: point git-lfs at tenpak through git config. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tp_store.h"

#define AGENT_NAME "tenpak"

/* The keys install writes, besides tenpak.store. */
#define KEY_STANDALONE "lfs.standalonetransferagent"
#define KEY_PATH "lfs.customtransfer." AGENT_NAME ".path"
#define KEY_ARGS "lfs.customtransfer." AGENT_NAME ".args"
#define KEY_CONCURRENT "lfs.customtransfer." AGENT_NAME ".concurrent"
#define KEY_STORE "tenpak.store"

static const char install_help[] =
	"usage: tenpak install [--local | --global] [--store URL]\n"
	"\n"
	"Configure git-lfs to move objects through tenpak. Writes to git config:\n"
	"  lfs.standalonetransferagent        = tenpak\n"
	"  lfs.customtransfer.tenpak.path     = <absolute path of this tenpak>\n"
	"  lfs.customtransfer.tenpak.args     = agent\n"
	"  lfs.customtransfer.tenpak.concurrent = true\n"
	"  tenpak.store                       = URL\n"
	"\n"
	"  --global     the user's ~/.gitconfig: every repository (default)\n"
	"  --local      .git/config of the repository in the current directory\n"
	"  --store URL  where objects are kept: /abs/path or file:///abs/path.\n"
	"               Without it an existing tenpak.store is kept, else the\n"
	"               default $XDG_DATA_HOME/tenpak/store (~/.local/share/...).\n"
	"\n"
	"Running it again is harmless. git-lfs itself must be set up too\n"
	"('git lfs install').\n";

static const char uninstall_help[] =
	"usage: tenpak uninstall [--local | --global]\n"
	"\n"
	"Remove the git config keys 'tenpak install' writes from the chosen\n"
	"config file (default --global). lfs.standalonetransferagent is removed\n"
	"only while it still names tenpak. Stored objects are not touched.\n";

static int parse_scope(const char *cmd, int argc, char **argv, const char **store,
		       tp_lineage_scope *scope, const char *help)
{
	bool local = false, global = false;
	int npos = 0;
	tp_cli_opt opts[] = {
		{ "--local", &local, NULL },
		{ "--global", &global, NULL },
		{ store ? "--store" : NULL, NULL, store },
		{ NULL, NULL, NULL },
	};
	int rc = tp_cli_parse(cmd, argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(help, stdout);
		return TP_CLI_HELP;
	}
	if (rc)
		return rc;
	if (npos > 0)
		return tp_cli_usage_error(cmd, "unexpected argument '%s'", argv[1]);
	if (local && global)
		return tp_cli_usage_error(cmd, "--local and --global are exclusive");
	*scope = local ? TP_LINEAGE_SCOPE_LOCAL : TP_LINEAGE_SCOPE_GLOBAL;
	return 0;
}

static int self_path(char **out)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n < 0)
		return tp_error_set_errno(TP_EIO, errno, "cannot find tenpak's own path");
	buf[n] = '\0';
	*out = strdup(buf);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

/* S3 settings for the check below come from the same config file. */
static int config_from_file(void *ctx, const char *key, char **value)
{
	char full[128];
	snprintf(full, sizeof(full), "tenpak.%s", key);
	return tp_lineage_config_read(ctx, full, value);
}

/* The store URL to record: --store, else the one already there, else the
 * default. The store is opened once so a typo fails here, not at push. */
static int choose_store(tp_lineage_config *cfg, const char *flag, char **url)
{
	int rc;
	if (flag) {
		if (!(*url = strdup(flag)))
			return tp_error_set(TP_ENOMEM, "out of memory");
	} else if ((rc = tp_lineage_config_read(cfg, KEY_STORE, url)) != 0) {
		if (rc != TP_ENOTFOUND || (rc = tp_store_default_url(url)) != 0)
			return rc;
	}
	tp_store *s = NULL;
	if ((rc = tp_store_open_with(&s, *url, config_from_file, cfg)) != 0) {
		free(*url);
		*url = NULL;
		return rc;
	}
	tp_store_free(s);
	return 0;
}

static void hint_git_lfs(void)
{
	char *v = NULL;
	tp_lineage_repo *repo = NULL;
	tp_lineage_repo_open(&repo); /* outside a repo: global config only */
	if (tp_lineage_config_get(repo, "filter.lfs.process", &v) == TP_ENOTFOUND)
		fprintf(stderr, "tenpak: note: git-lfs filters are not configured; "
				"run 'git lfs install' too\n");
	free(v);
	tp_lineage_repo_free(repo);
}

int tp_cmd_install(int argc, char **argv)
{
	const char *store_flag = NULL;
	tp_lineage_scope scope = TP_LINEAGE_SCOPE_GLOBAL;
	tp_lineage_config *cfg = NULL;
	char *exe = NULL, *url = NULL;
	int rc = parse_scope("install", argc, argv, &store_flag, &scope, install_help);
	if (rc)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	if (store_flag && !*store_flag)
		return tp_cli_usage_error("install", "--store needs a non-empty URL");

	int exit_code = TP_EXIT_FAIL;
	if (self_path(&exe) || tp_lineage_config_open(&cfg, scope) ||
	    choose_store(cfg, store_flag, &url))
		goto done;
	if (tp_lineage_config_set(cfg, KEY_STANDALONE, AGENT_NAME) ||
	    tp_lineage_config_set(cfg, KEY_PATH, exe) ||
	    tp_lineage_config_set(cfg, KEY_ARGS, "agent") ||
	    tp_lineage_config_set(cfg, KEY_CONCURRENT, "true") ||
	    tp_lineage_config_set(cfg, KEY_STORE, url))
		goto done;
	printf("tenpak installed in %s\n  agent: %s agent\n  store: %s\n",
	       tp_lineage_config_path(cfg), exe, url);
	hint_git_lfs();
	exit_code = TP_EXIT_OK;
done:
	if (exit_code != TP_EXIT_OK)
		tp_cli_fail("install");
	free(exe);
	free(url);
	tp_lineage_config_free(cfg);
	return exit_code;
}

int tp_cmd_uninstall(int argc, char **argv)
{
	tp_lineage_scope scope = TP_LINEAGE_SCOPE_GLOBAL;
	tp_lineage_config *cfg = NULL;
	char *agent = NULL;
	int rc = parse_scope("uninstall", argc, argv, NULL, &scope, uninstall_help);
	if (rc)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;

	int exit_code = TP_EXIT_FAIL;
	if (tp_lineage_config_open(&cfg, scope))
		goto done;
	rc = tp_lineage_config_read(cfg, KEY_STANDALONE, &agent);
	if (rc && rc != TP_ENOTFOUND)
		goto done;
	/* Another agent configured since is the user's choice: leave it. */
	if (rc == 0 && strcmp(agent, AGENT_NAME) == 0 && tp_lineage_config_unset(cfg, KEY_STANDALONE))
		goto done;
	if (tp_lineage_config_unset(cfg, KEY_PATH) || tp_lineage_config_unset(cfg, KEY_ARGS) ||
	    tp_lineage_config_unset(cfg, KEY_CONCURRENT) || tp_lineage_config_unset(cfg, KEY_STORE))
		goto done;
	printf("tenpak removed from %s\n", tp_lineage_config_path(cfg));
	exit_code = TP_EXIT_OK;
done:
	if (exit_code != TP_EXIT_OK)
		tp_cli_fail("uninstall");
	free(agent);
	tp_lineage_config_free(cfg);
	return exit_code;
}
