#include <stdio.h>

#include "cli.h"

/* Built only until the delta module lands. */
int tp_cmd_delta(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "tenpak: delta: not available in this build\n");
	return TP_EXIT_FAIL;
}
