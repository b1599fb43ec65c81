/* hooks/ internals: the libgit2 handle the diff and tree lookups need. */
#ifndef TP_HOOKS_INTERNAL_H
#define TP_HOOKS_INTERNAL_H

#include <git2.h>

#include "tp_hooks.h"

/* The repository r names (its git dir), opened again by libgit2 for
 * hooks/'s own use. Free with tp_hooks_git_close. */
int tp_hooks_git_open(tp_git_repo *r, git_repository **out);
void tp_hooks_git_close(git_repository *repo);
/* The last libgit2 error as a tenpak error: "<what>: <message>". */
int tp_hooks_git_fail(int code, const char *what);


/* "<git common dir>/tenpak/<sub>". */
int tp_hooks_state_path(tp_git_repo *r, const char *sub, char **out);

#endif
