/* tenpak key: Ed25519 keys that sign the manifests the agent stores. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char key_help[] =
	"usage: tenpak key generate [--out FILE]\n"
	"       tenpak key show [FILE]\n"
	"\n"
	"generate  create an Ed25519 key pair; the secret key goes to FILE (mode\n"
	"          0600, never over an existing file; default\n"
	"          $XDG_CONFIG_HOME/tenpak/signing.key, else ~/.config/tenpak/...)\n"
	"          and the public key is printed\n"
	"show      print the public key of FILE, else of git config tenpak.signingkey\n"
	"\n"
	"To sign every manifest you push:   git config tenpak.signingkey FILE\n"
	"To trust signers on download:      git config tenpak.trustedkeys \"ed25519:... ed25519:...\"\n"
	"To refuse unsigned manifests:      git config tenpak.verify required\n";

static int default_key_path(char **out)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (xdg && xdg[0] == '/')
		return tp_path_join(out, xdg, "tenpak/signing.key");
	if (home && home[0] == '/')
		return tp_path_join(out, home, ".config/tenpak/signing.key");
	return tp_error_set(TP_ECONFIG, "neither XDG_CONFIG_HOME nor HOME is set; use --out");
}

static int generate(const char *out)
{
	char *path = NULL, pub[TP_SIGN_PUBLIC_TEXT_MAX];
	tp_sign_key *k = NULL;
	int rc = out ? ((path = strdup(out)) ? 0 : TP_ENOMEM) : default_key_path(&path);
	if (!rc && !out) {
		char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
		if (slash)
			*slash = '\0';
		rc = dir ? tp_fs_mkdirs(dir) : TP_ENOMEM;
		free(dir);
	}
	if (!rc)
		rc = tp_sign_key_generate(&k);
	if (!rc)
		rc = tp_sign_key_save(k, path);
	if (!rc) {
		tp_sign_key_public(k, pub);
		printf("%s\n", pub);
		fprintf(stderr, "tenpak: secret key written to %s\n"
				"tenpak: sign with:  git config tenpak.signingkey %s\n"
				"tenpak: trust with: git config tenpak.trustedkeys %s\n", path, path, pub);
	}
	tp_sign_key_free(k);
	free(path);
	return rc ? tp_cli_fail("key generate") : TP_EXIT_OK;
}

static int show(const char *file)
{
	char *path = NULL, pub[TP_SIGN_PUBLIC_TEXT_MAX];
	tp_git_repo *repo = NULL;
	tp_sign_key *k = NULL;
	int rc = 0;
	if (file) {
		path = strdup(file);
	} else {
		tp_git_repo_open(&repo); /* none: global config */
		rc = tp_git_config_get(repo, "tenpak.signingkey", &path);
		if (rc == TP_ENOTFOUND)
			tp_error_set(rc, "no FILE given and tenpak.signingkey is not set");
	}
	if (!rc)
		rc = path ? tp_sign_key_load(&k, path) : TP_ENOMEM;
	if (!rc) {
		tp_sign_key_public(k, pub);
		printf("%s\n", pub);
	}
	tp_sign_key_free(k);
	tp_git_repo_free(repo);
	free(path);
	return rc ? tp_cli_fail("key show") : TP_EXIT_OK;
}

int tp_cmd_key(int argc, char **argv)
{
	const char *out = NULL;
	int npos = 0;
	tp_cli_opt opts[] = { { "--out", NULL, &out }, { NULL, NULL, NULL } };
	int rc = tp_cli_parse("key", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(key_help, stdout);
		return TP_EXIT_OK;
	}
	if (rc)
		return rc;
	if (npos == 0)
		return tp_cli_usage_error("key", "missing subcommand (generate, show)");
	if (strcmp(argv[1], "generate") == 0 && npos == 1)
		return generate(out);
	if (strcmp(argv[1], "show") == 0 && npos <= 2 && !out)
		return show(npos == 2 ? argv[2] : NULL);
	return tp_cli_usage_error("key", "unknown subcommand or arguments");
}
