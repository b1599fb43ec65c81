/*
 * The history source: the previous version of the target's model, found
 * by walking its commit's ancestry (index.c's walk: shallow clones end a
 * line of history instead of failing).
 */
#include <string.h>

#include "lineage_internal.h"

#define HISTORY_MAX 10000 /* commits walked for a previous version */

/* The nearest ancestor of the target's commit (newest first) where the
 * target's directory held a different model than the target. */
int tp_lineage_from_history(tp_lineage_search *s)
{
	tp_lineage_walk *walk = NULL;
	git_commit *commit = NULL;
	int rc = tp_lineage_walk_new(&walk, s->repo->repo, s->commit, HISTORY_MAX);
	while (!rc && (rc = tp_lineage_walk_next(walk, &commit)) == 0) {
		git_tree *tree = NULL;
		tp_lineage_candidate c = { .source = TP_LINEAGE_SOURCE_HISTORY };
		int r = git_commit_tree(&tree, commit) == 0
			? tp_lineage_tree_resolve(tree, s->dir, s->fname, &c)
			: TP_ENOTFOUND;
		bool is_target = false;
		for (size_t i = 0; i < c.nfiles; i++)
			is_target |= strcmp(c.files[i].oid, s->out->target.oid) == 0;
		if (r == 0 && !is_target) {
			char hex[GIT_OID_HEXSZ + 1];
			git_oid_tostr(hex, sizeof(hex), git_commit_id(commit));
			rc = tp_lineage_candidate_evidence(&c, "previous version in commit %.12s",
							   hex);
			if (!rc)
				rc = tp_lineage_candidate_add(s->out, &c);
			if (!rc)
				rc = TP_ENOTFOUND; /* found: stop */
		} else if (r != 0 && r != TP_ENOTFOUND) {
			rc = r;
		}
		tp_lineage_candidate_clear(&c);
		git_tree_free(tree);
		git_commit_free(commit);
	}
	tp_lineage_walk_free(walk);
	return rc == TP_ENOTFOUND ? 0 : rc;
}
