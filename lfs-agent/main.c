/* tenpak: git-lfs custom transfer agent for ML models. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef TP_VERSION
#define TP_VERSION "0.0.0"
#endif

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "install", tp_cmd_install, "register tenpak with git-lfs and route remotes to it" },
	{ "uninstall", tp_cmd_uninstall, "remove exactly what 'tenpak install' wrote" },
	{ "agent", tp_cmd_agent, "the git-lfs custom transfer agent (started by git-lfs)" },
	{ "key", tp_cmd_key, "signing keys for manifest provenance" },
	{ "lineage", tp_cmd_lineage, "show which base each model file is stored against" },
	{ "store", tp_cmd_store, "inspect and check a store: stats, fsck, show" },
	{ "delta", tp_cmd_delta, "lossless tensor-wise deltas of safetensors files" },
	{ "eval", tp_cmd_eval, "perplexity, KL divergence and speed of a causal LM" },
	{ "optimize", tp_cmd_optimize, "measure what each quantization candidate costs in quality" },
	{ "hooks", tp_cmd_hooks, "install or remove the pre-push hook (advice on push)" },
	{ "hook", tp_cmd_hook, "the pre-push hook's work (run by the hook)" },
	{ "report", tp_cmd_report, "print the optimizer report a push stored for a model" },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tenpak <command> [options]\n"
		"       tenpak --version | --help\n"
		"\n"
		"tenpak stores machine-learning model files for git-lfs. It runs as a\n"
		"git-lfs custom transfer agent and keeps objects in a store: a local\n"
		"directory by default.\n"
		"\n"
		"commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
		"\n"
		"'tenpak <command> --help' explains a command. Exit status: 0 on success,\n"
		"1 when the work failed, 2 for a usage error.\n");
}

int main(int argc, char **argv)
{
	tp_log_init("tenpak");
	if (sodium_init() < 0) {
		fprintf(stderr, "tenpak: cannot initialise libsodium\n");
		return TP_EXIT_FAIL;
	}
	if (argc < 2) {
		usage(stderr);
		return TP_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (tp_cli_is_help(cmd) || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return TP_EXIT_OK;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
		printf("tenpak %s\n", TP_VERSION);
		return TP_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	if (cmd[0] == '-')
		return tp_cli_usage_error(NULL, "unknown option '%s'", cmd);
	return tp_cli_usage_error(NULL, "unknown command '%s'", cmd);
}
