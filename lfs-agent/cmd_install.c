/*
 * tenpak install / uninstall: point git-lfs at tenpak through git config.
 *
 * Registering the agent (lfs.customtransfer.tenpak.*) changes nothing by
 * itself; routing a remote to it does. Routes are scoped: a URL-scoped
 * lfs.<url>.standalonetransferagent in any file, or the unscoped key in one
 * repository's .git/config. The unscoped key is never written to
 * ~/.gitconfig, where it would send every LFS repository of the user
 * (GitHub, Hugging Face) to tenpak's store.
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tp_store.h"

#define AGENT_NAME "tenpak"

/* The keys install writes. */
#define KEY_STANDALONE "lfs.standalonetransferagent"
#define KEY_PATH "lfs.customtransfer." AGENT_NAME ".path"
#define KEY_ARGS "lfs.customtransfer." AGENT_NAME ".args"
#define KEY_CONCURRENT "lfs.customtransfer." AGENT_NAME ".concurrent"
#define KEY_STORE "tenpak.store"

#define MAX_REMOTES 32

static const char install_help[] =
	"usage: tenpak install [--global | --local] [--store URL] [--hooks] [--remote URL...]\n"
	"\n"
	"Register tenpak as a git-lfs transfer agent and route remotes to it. Only\n"
	"routed remotes send LFS objects to tenpak's store; every other LFS\n"
	"repository (GitHub, Hugging Face, ...) keeps using its own LFS server.\n"
	"\n"
	"  (no option)   register in ~/.gitconfig; inside a repository also route\n"
	"                all its remotes (in its .git/config); outside one, route\n"
	"                nothing and say how\n"
	"  --global      register in ~/.gitconfig; route only --remote URLs\n"
	"  --local       register and route all remotes of the repository in the\n"
	"                current directory, in its .git/config only (with --remote:\n"
	"                only those remotes)\n"
	"  --remote URL...\n"
	"                route remotes whose LFS endpoint starts with URL, in whole\n"
	"                path parts ('git lfs env' shows endpoints). https://host/org/repo,\n"
	"                https://host (a whole server), /srv/git or file:///srv/git\n"
	"                (local remotes below it), git@host:org/repo.git (written as\n"
	"                https://host/org/repo.git). '--remote A B' = '--remote A --remote B'\n"
	"  --store URL   where objects are kept: /abs/path or file:///abs/path.\n"
	"                Without it an existing tenpak.store is kept, else the\n"
	"                default $XDG_DATA_HOME/tenpak/store (~/.local/share/...).\n"
	"  --hooks       also install the pre-push hook in the repository in the\n"
	"                current directory, for advice on push ('tenpak hooks --help')\n"
	"\n"
	"Writes to git config:\n"
	"  lfs.customtransfer.tenpak.path       = <absolute path of this tenpak>\n"
	"  lfs.customtransfer.tenpak.args       = agent\n"
	"  lfs.customtransfer.tenpak.concurrent = true\n"
	"  tenpak.store                         = URL\n"
	"  lfs.<URL>.standalonetransferagent    = tenpak   (each --remote)\n"
	"  lfs.standalonetransferagent          = tenpak   (a repository's\n"
	"                                                   .git/config only)\n"
	"\n"
	"An lfs.standalonetransferagent = tenpak in ~/.gitconfig, left by an older\n"
	"tenpak, routed every repository of the user; install removes it and\n"
	"says so (with --local it only warns). 'git lfs env' shows a remote's\n"
	"endpoint. Running install again is harmless. git-lfs itself must be set\n"
	"up ('git lfs install'); install warns when it is not.\n";

static const char uninstall_help[] =
	"usage: tenpak uninstall [--global | --local] [--hooks] [--remote URL...]\n"
	"\n"
	"Remove what 'tenpak install' wrote: the lfs.customtransfer.tenpak.* keys,\n"
	"tenpak.store, and every lfs.standalonetransferagent and\n"
	"lfs.<URL>.standalonetransferagent that names tenpak (another agent\n"
	"configured since is left alone). With --remote, remove only those\n"
	"routes. Stored objects are not touched.\n"
	"\n"
	"  (no option)  ~/.gitconfig and, inside a repository, its .git/config\n"
	"  --global     ~/.gitconfig only\n"
	"  --local      the .git/config of the repository in the current directory\n"
	"  --hooks      also remove the pre-push hook of the repository in the current\n"
	"               directory ('tenpak hooks uninstall')\n"
	"\n"
	"Says 'nothing to remove' (exit 0) when none of it was there.\n";

typedef enum { SCOPE_DEFAULT, SCOPE_GLOBAL, SCOPE_LOCAL } scope;

typedef struct opts {
	scope where;
	bool hooks;
	const char *store;
	const char *remotes[MAX_REMOTES];
	int nremotes;
	char *urls[MAX_REMOTES]; /* remotes[i] as git-lfs matches it */
} opts;

static int parse_opts(const char *cmd, int argc, char **argv, bool with_store, opts *o,
		      const char *help)
{
	bool local = false, global = false, remote = false;
	int npos = 0;
	/* --remote is a flag: the URLs are the arguments, so it may repeat
	 * ("--remote A --remote B" or "--remote A B"). */
	tp_cli_opt table[] = {
		{ "--local", &local, NULL },
		{ "--global", &global, NULL },
		{ "--remote", &remote, NULL },
		{ "--hooks", &o->hooks, NULL },
		{ with_store ? "--store" : NULL, NULL, &o->store },
		{ NULL, NULL, NULL },
	};
	int rc = tp_cli_parse(cmd, argc, argv, table, &npos);
	if (rc == TP_CLI_HELP)
		fputs(help, stdout);
	if (rc)
		return rc;
	if (npos > 0 && !remote)
		return tp_cli_usage_error(cmd, "unexpected argument '%s'", argv[1]);
	if (remote && npos == 0)
		return tp_cli_usage_error(cmd, "--remote needs a URL");
	if (npos > MAX_REMOTES)
		return tp_cli_usage_error(cmd, "at most %d remotes at once", MAX_REMOTES);
	if (local && global)
		return tp_cli_usage_error(cmd, "--local and --global are exclusive");
	for (int i = 0; i < npos; i++) {
		if (!*argv[i + 1])
			return tp_cli_usage_error(cmd, "--remote needs a non-empty URL");
		o->remotes[o->nremotes++] = argv[i + 1];
	}
	o->where = local ? SCOPE_LOCAL : global ? SCOPE_GLOBAL : SCOPE_DEFAULT;
	return 0;
}

/* A formatted string, malloc'd; NULL when out of memory. */
static char *fmt_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_alloc(const char *fmt, ...)
{
	tp_buf b = TP_BUF_INIT(1 << 16);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf(&b, fmt, ap);
	va_end(ap);
	if (rc) {
		tp_buf_free(&b);
		return NULL;
	}
	return tp_buf_detach(&b);
}

/* Remove "." and ".." parts and doubled slashes of an absolute path, in
 * place, as git-lfs's filepath.Abs does: no symlinks are resolved. */
static void clean_path(char *p)
{
	char *out = p;
	const char *s = p;
	while (*s) {
		while (*s == '/')
			s++;
		const char *end = s + strcspn(s, "/");
		size_t n = (size_t)(end - s);
		if (n == 1 && s[0] == '.') {
			/* skip */
		} else if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (out > p && *--out != '/')
				;
		} else if (n > 0) {
			*out++ = '/';
			memmove(out, s, n);
			out += n;
		}
		s = end;
	}
	if (out == p)
		*out++ = '/';
	*out = '\0';
}

/* url with each character of chars after its "://" as %XX. */
static char *percent_encode(const char *url, const char *chars)
{
	tp_buf b = TP_BUF_INIT(1 << 16);
	const char *rest = strstr(url, "://") + 3;
	int rc = tp_buf_add(&b, url, (size_t)(rest - url));
	for (; !rc && *rest; rest++)
		rc = strchr(chars, *rest) ? tp_buf_addf(&b, "%%%02X", (unsigned char)*rest)
					  : tp_buf_add(&b, rest, 1);
	if (rc) {
		tp_buf_free(&b);
		return NULL;
	}
	return tp_buf_detach(&b);
}

/* The URL to scope lfs.<url>.standalonetransferagent with, from what the
 * user typed. git-lfs matches it against the remote's LFS endpoint: http(s)
 * and file URLs as given, ssh remotes as https://host/path, local paths as
 * file://<absolute path>; a prefix of whole path parts matches. */
static int route_url(const char *arg, char **out)
{
	char *url = NULL;
	const char *sep = strstr(arg, "://");
	const char *colon = strchr(arg, ':');
	const char *slash = strchr(arg, '/');
	for (const char *c = arg; *c; c++)
		if ((unsigned char)*c < 0x20)
			return tp_error_set(TP_EINVAL, "remote URL with a control character");
	if (sep) {
		size_t slen = (size_t)(sep - arg);
		if ((slen == 4 && strncmp(arg, "http", 4) == 0) ||
		    (slen == 5 && strncmp(arg, "https", 5) == 0) ||
		    (slen == 4 && strncmp(arg, "file", 4) == 0)) {
			/* A password never goes into a key name (git-lfs matches
			 * on the user name only). */
			const char *auth = sep + 3, *path = auth + strcspn(auth, "/");
			const char *at = memchr(auth, '@', (size_t)(path - auth));
			const char *pw = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
			url = pw ? fmt_alloc("%.*s%s", (int)(pw - arg), arg, at) : strdup(arg);
		} else if ((slen == 3 && strncmp(arg, "ssh", 3) == 0) ||
			   (slen == 7 && (strncmp(arg, "git+ssh", 7) == 0 ||
					  strncmp(arg, "ssh+git", 7) == 0))) {
			/* ssh://[user@]host[:port]/path: git-lfs drops user and port */
			const char *auth = sep + 3, *path = auth + strcspn(auth, "/");
			const char *at = memchr(auth, '@', (size_t)(path - auth));
			const char *host = at ? at + 1 : auth;
			const char *port = memchr(host, ':', (size_t)(path - host));
			int hlen = (int)((port ? port : path) - host);
			url = fmt_alloc("https://%.*s%s", hlen, host, path);
		} else {
			return tp_error_set(TP_EINVAL, "remote URL scheme '%.*s': use an http(s)://, "
					    "ssh://, file:// URL, user@host:path or a local path",
					    (int)slen, arg);
		}
	} else if (colon && (!slash || colon < slash) && arg[0] != '/') {
		/* scp-like user@host:path */
		const char *at = memchr(arg, '@', (size_t)(colon - arg));
		const char *host = at ? at + 1 : arg, *path = colon + 1;
		while (*path == '/')
			path++;
		url = fmt_alloc("https://%.*s/%s", (int)(colon - host), host, path);
	} else {
		/* a local path: git-lfs makes it absolute against the repository's
		 * directory; here against the current one */
		char cwd[PATH_MAX];
		if (arg[0] != '/' && !getcwd(cwd, sizeof(cwd)))
			return tp_error_set_errno(TP_EIO, errno, "cannot get the current directory");
		url = fmt_alloc("file://%s/%s", arg[0] == '/' ? "" : cwd, arg);
		if (url)
			clean_path(url + 7);
	}
	/* git-lfs finds lfs.<url>.* keys with \S+ and decodes %XX, so a space
	 * must be %20 to match; a local path may also hold '%', '?' or '#'. */
	char *esc = url ? percent_encode(url, sep ? " " : " %?#") : NULL;
	free(url);
	if (!esc)
		return tp_error_set(TP_ENOMEM, "out of memory");
	/* "https://host/" and "https://host" match the same; keep one form. */
	size_t len = strlen(esc), min = (size_t)(strstr(esc, "://") - esc) + 3;
	while (len > min && esc[len - 1] == '/')
		esc[--len] = '\0';
	*out = esc;
	return 0;
}

static int scoped_key(const char *url, char **key)
{
	*key = fmt_alloc("lfs.%s.standalonetransferagent", url);
	return *key ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

/* S3 settings for the check below come from the same config file. */
static int config_from_file(void *ctx, const char *key, char **value)
{
	char full[128];
	snprintf(full, sizeof(full), "tenpak.%s", key);
	return tp_git_config_read(ctx, full, value);
}

/* The store URL to record: --store, else the one already there, else the
 * default. The store is opened once so a typo fails here, not at push. */
static int choose_store(tp_git_config *cfg, const char *flag, char **url)
{
	int rc;
	if (flag) {
		if (!(*url = strdup(flag)))
			return tp_error_set(TP_ENOMEM, "out of memory");
	} else if ((rc = tp_git_config_read(cfg, KEY_STORE, url)) != 0) {
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

static bool config_has(tp_git_repo *repo, const char *key)
{
	char *v = NULL;
	int rc = tp_git_config_get(repo, key, &v);
	free(v);
	return rc == 0;
}

/* Without git-lfs's filters, 'git add' stores tracked model files as plain
 * git blobs: nothing reaches git-lfs, hence nothing reaches tenpak. */
static void warn_without_git_lfs(void)
{
	tp_git_repo *repo = NULL;
	tp_git_repo_open(&repo); /* outside a repo: global and system config */
	if (!config_has(repo, "filter.lfs.process") &&
	    !(config_has(repo, "filter.lfs.clean") && config_has(repo, "filter.lfs.smudge")))
		fprintf(stderr, "tenpak: warning: git-lfs is not set up (no filter.lfs.process "
				"in git config): files tracked with 'git lfs track' would be "
				"committed as plain git blobs and never reach tenpak; run "
				"'git lfs install'\n");
	tp_git_repo_free(repo);
}

/* The value of key in cfg is tenpak: install wrote it. */
static bool names_tenpak(tp_git_config *cfg, const char *key)
{
	char *v = NULL;
	bool yes = tp_git_config_read_own(cfg, key, &v) == 0 && strcmp(v, AGENT_NAME) == 0;
	free(v);
	return yes;
}

/* An older tenpak wrote the unscoped key to ~/.gitconfig, routing every LFS
 * repository of the user. Remove it (or, when asked to touch only the
 * repository, say how), naming what it did. */
static int migrate_old_install(tp_git_config *global, bool remove)
{
	if (!names_tenpak(global, KEY_STANDALONE))
		return 0;
	if (!remove) {
		fprintf(stderr, "tenpak: warning: %s sets lfs.standalonetransferagent = tenpak "
				"(an older tenpak install): every LFS repository goes to "
				"tenpak; 'tenpak install --global' removes it\n",
			tp_git_config_path(global));
		return 0;
	}
	int rc = tp_git_config_unset(global, KEY_STANDALONE);
	if (!rc)
		fprintf(stderr, "tenpak: removed lfs.standalonetransferagent = tenpak from %s "
				"(an older tenpak install): it sent every LFS repository to "
				"tenpak, not only yours. Routes are now per remote or repository.\n",
			tp_git_config_path(global));
	return rc;
}

static int write_registration(tp_git_config *cfg, const char *exe, const char *store)
{
	if (tp_git_config_set(cfg, KEY_PATH, exe) || tp_git_config_set(cfg, KEY_ARGS, "agent") ||
	    tp_git_config_set(cfg, KEY_CONCURRENT, "true") ||
	    tp_git_config_set(cfg, KEY_STORE, store))
		return TP_ECONFIG;
	return 0;
}

/* Every --remote as a URL, before anything is written: a bad one changes
 * nothing. */
static int resolve_routes(opts *o)
{
	int rc = 0;
	for (int i = 0; i < o->nremotes && !rc; i++)
		rc = route_url(o->remotes[i], &o->urls[i]);
	return rc;
}

static void opts_clear(opts *o)
{
	for (int i = 0; i < o->nremotes; i++)
		free(o->urls[i]);
}

static int write_routes(tp_git_config *cfg, const opts *o)
{
	int rc = 0;
	for (int i = 0; i < o->nremotes && !rc; i++) {
		char *key = NULL;
		if ((rc = scoped_key(o->urls[i], &key)) == 0 &&
		    (rc = tp_git_config_set(cfg, key, AGENT_NAME)) == 0)
			printf("  route: %s  (%s)\n", o->urls[i], key);
		free(key);
	}
	return rc;
}

int tp_cmd_install(int argc, char **argv)
{
	opts o = { 0 };
	tp_git_config *cfg = NULL, *repo_cfg = NULL;
	char *exe = NULL, *url = NULL;
	int rc = parse_opts("install", argc, argv, true, &o, install_help);
	if (rc)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	if (o.store && !*o.store)
		return tp_cli_usage_error("install", "--store needs a non-empty URL");

	int exit_code = TP_EXIT_FAIL;
	bool local = o.where == SCOPE_LOCAL;
	if (resolve_routes(&o) || tp_cli_self_path(&exe) ||
	    tp_git_config_open(&cfg, local ? TP_GIT_SCOPE_LOCAL : TP_GIT_SCOPE_GLOBAL) ||
	    choose_store(cfg, o.store, &url))
		goto done;
	/* With no option and no --remote, a repository here is routed whole. */
	if (o.where == SCOPE_DEFAULT && o.nremotes == 0) {
		rc = tp_git_config_open(&repo_cfg, TP_GIT_SCOPE_LOCAL);
		if (rc && rc != TP_ENOTFOUND)
			goto done;
	}
	if (write_registration(cfg, exe, url))
		goto done;
	printf("tenpak installed in %s\n  agent: %s agent\n  store: %s\n",
	       tp_git_config_path(cfg), exe, url);
	if (write_routes(cfg, &o))
		goto done;
	tp_git_config *whole = local && o.nremotes == 0 ? cfg : repo_cfg;
	if (whole) {
		if (tp_git_config_set(whole, KEY_STANDALONE, AGENT_NAME))
			goto done;
		printf("  route: every remote of this repository  (%s in %s)\n", KEY_STANDALONE,
		       tp_git_config_path(whole));
	} else if (o.nremotes == 0) {
		printf("  route: none yet. Route a remote with 'tenpak install --remote URL',\n"
		       "         or run 'tenpak install' inside a repository.\n");
	}
	/* --local leaves ~/.gitconfig alone, so it only warns. */
	tp_git_config *global = NULL;
	if (!local && migrate_old_install(cfg, true))
		goto done;
	if (local && tp_git_config_open(&global, TP_GIT_SCOPE_GLOBAL) == 0)
		migrate_old_install(global, false);
	tp_git_config_free(global);
	warn_without_git_lfs();
	if (o.hooks && tp_cli_hooks_install())
		goto done;
	exit_code = TP_EXIT_OK;
done:
	if (exit_code != TP_EXIT_OK)
		tp_cli_fail("install");
	free(exe);
	free(url);
	opts_clear(&o);
	tp_git_config_free(cfg);
	tp_git_config_free(repo_cfg);
	return exit_code;
}

/* Unset key if it is in cfg (and, with want, only while it has that value),
 * counting what went. */
static int remove_key(tp_git_config *cfg, const char *key, const char *want, int *removed)
{
	char *v = NULL;
	int rc = tp_git_config_read_own(cfg, key, &v);
	if (rc == 0 && (!want || strcmp(v, want) == 0) && (rc = tp_git_config_unset(cfg, key)) == 0)
		++*removed;
	free(v);
	return rc == TP_ENOTFOUND ? 0 : rc;
}

typedef struct sweep {
	tp_git_config *cfg;
	int removed;
} sweep;

static int remove_scoped(void *ctx, const char *key, const char *value)
{
	sweep *s = ctx;
	if (strcmp(value, AGENT_NAME) != 0)
		return 0; /* another agent configured since: the user's choice */
	int rc = tp_git_config_unset(s->cfg, key);
	if (!rc)
		s->removed++;
	return rc;
}

/* Remove from one file what install writes there, or only the --remote
 * routes; *removed counts the keys that went. */
static int uninstall_from(tp_git_config *cfg, const opts *o, int *removed)
{
	sweep s = { cfg, 0 };
	int rc = 0;
	for (int i = 0; i < o->nremotes && !rc; i++) {
		char *key = NULL;
		if ((rc = scoped_key(o->urls[i], &key)) == 0)
			rc = remove_key(cfg, key, AGENT_NAME, &s.removed);
		free(key);
	}
	if (!rc && o->nremotes == 0) {
		const char *keys[] = { KEY_PATH, KEY_ARGS, KEY_CONCURRENT, KEY_STORE };
		rc = remove_key(cfg, KEY_STANDALONE, AGENT_NAME, &s.removed);
		for (size_t i = 0; !rc && i < sizeof(keys) / sizeof(keys[0]); i++)
			rc = remove_key(cfg, keys[i], NULL, &s.removed);
		if (!rc)
			rc = tp_git_config_each(cfg, "lfs.", ".standalonetransferagent",
						    remove_scoped, &s);
	}
	if (!rc && s.removed)
		printf("tenpak removed from %s (%d key%s)\n", tp_git_config_path(cfg), s.removed,
		       s.removed == 1 ? "" : "s");
	*removed += s.removed;
	return rc;
}

int tp_cmd_uninstall(int argc, char **argv)
{
	opts o = { 0 };
	tp_git_config *cfg = NULL, *repo_cfg = NULL;
	int rc = parse_opts("uninstall", argc, argv, false, &o, uninstall_help);
	if (rc)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;

	int exit_code = TP_EXIT_FAIL, removed = 0;
	bool local = o.where == SCOPE_LOCAL;
	if (resolve_routes(&o) ||
	    tp_git_config_open(&cfg, local ? TP_GIT_SCOPE_LOCAL : TP_GIT_SCOPE_GLOBAL))
		goto done;
	/* With no option, a repository here is cleaned too: install routed it. */
	if (o.where == SCOPE_DEFAULT) {
		rc = tp_git_config_open(&repo_cfg, TP_GIT_SCOPE_LOCAL);
		if (rc && rc != TP_ENOTFOUND)
			goto done;
	}
	if (uninstall_from(cfg, &o, &removed) || (repo_cfg && uninstall_from(repo_cfg, &o, &removed)))
		goto done;
	if (removed == 0)
		printf("tenpak: nothing to remove in %s%s%s\n", tp_git_config_path(cfg),
		       repo_cfg ? " or " : "", repo_cfg ? tp_git_config_path(repo_cfg) : "");
	if (o.hooks && tp_cli_hooks_uninstall())
		goto done;
	exit_code = TP_EXIT_OK;
done:
	if (exit_code != TP_EXIT_OK)
		tp_cli_fail("uninstall");
	opts_clear(&o);
	tp_git_config_free(cfg);
	tp_git_config_free(repo_cfg);
	return exit_code;
}
