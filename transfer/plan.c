/*
 * The plan of an upload: which base candidates can be used, what a delta
 * against each would cost, and what to store. A dry run: nothing reaches
 * the store. Uploads execute it (upload.c) and `tenpak lineage` prints it,
 * so that what lineage says is what a push does.
 */
#include "transfer_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void tp_transfer_choice_clear(tp_transfer_choice *c)
{
	for (size_t i = 0; i < c->nbases; i++) {
		free(c->bases[i].path);
		free(c->bases[i].label);
	}
	free(c->bases);
	tp_buf_free(&c->reason);
	tp_delta_layout_free(c->layout);
	memset(c, 0, sizeof(*c));
}

char **tp_transfer_choice_paths(const tp_transfer_choice *c)
{
	char **v = calloc(c->nbases + 1, sizeof(*v));
	for (size_t i = 0; v && i < c->nbases; i++)
		v[i] = c->bases[i].path;
	return v;
}

static bool choice_has_base(const tp_transfer_choice *c, const char *oid)
{
	for (size_t i = 0; i < c->nbases; i++)
		if (strcmp(c->bases[i].oid, oid) == 0)
			return true;
	return false;
}

/* Local bytes of a base: a local copy (hint, a file lineage found, first;
 * *unverified when its hash is left to the encode pass), one this operation
 * already rebuilt, else rebuilt from the store into a scratch file kept in
 * scratch. */
static int base_bytes(tp_transfer *t, const char *oid, uint64_t size, const char *hint,
		      tp_transfer_scratch *scratch, bool *unverified, char **path)
{
	const char *kept = tp_transfer_scratch_find(scratch, oid);
	if (kept)
		return (*path = strdup(kept)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (tp_transfer_local_copy(t, oid, size, hint, unverified, path) == 0) {
		tp_trace("base %s: local copy %s", oid, *path);
		return 0;
	}
	char *tmp = NULL;
	int rc = tp_transfer_scratch_new(t, "base", &tmp);
	if (rc)
		return rc;
	tp_trace("base %s: rebuilding from the store", oid);
	if ((rc = tp_transfer_rebuild(t, scratch, oid, size, tmp, false)) != 0) {
		tp_transfer_scratch_drop(tmp);
		return tp_error_wrap(rc, "base %s", oid);
	}
	tp_transfer_local_remember(t, tmp, oid);
	if ((rc = tp_transfer_scratch_keep(scratch, oid, tmp)) != 0)
		return rc;
	*path = strdup(tmp);
	return *path ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

/* keep (may be NULL): gets the plan the estimate made, which the encode
 * then codes by instead of planning again. */
static int estimate(tp_transfer *t, const char *target, char **bases, size_t nbases,
		    unsigned stride, uint64_t *size, tp_delta_layout **keep)
{
	tp_delta_layout *m = NULL;
	tp_delta_opts o = tp_transfer_codec_opts(t, false);
	o.estimate_stride = stride;
	int rc = tp_delta_estimate(&m, target, (const char *const *)bases, nbases, &o);
	if (!rc)
		*size = m->delta_size;
	if (!rc && keep) {
		*keep = m;
		m = NULL;
	}
	tp_delta_layout_free(m);
	return rc;
}

/* The whole file's estimate serves only to be compared with the best
 * delta's (est): a coarse one, 1 chunk in WHOLE_COARSE_STRIDE, decides
 * when they are WHOLE_COARSE_MARGIN times apart or more either way; closer,
 * the usual one (1 in 8) does. Coding a file whole costs several times
 * what coding its delta does, so the coarse sample saves most of this
 * estimate for a fine-tune, and an unrelated model is estimated as finely
 * as ever. */
#define WHOLE_COARSE_STRIDE 32u
#define WHOLE_COARSE_MARGIN 2u

static int estimate_whole(tp_transfer *t, const char *target, uint64_t est, uint64_t *whole)
{
	int rc = estimate(t, target, NULL, 0, WHOLE_COARSE_STRIDE, whole, NULL);
	if (rc || est / WHOLE_COARSE_MARGIN >= *whole || *whole / WHOLE_COARSE_MARGIN >= est)
		return rc;
	return estimate(t, target, NULL, 0, 0, whole, NULL);
}

/* Gather the local bytes of a candidate's files; an error when some are not
 * available on this machine or in the store. */
static int candidate_bases(tp_transfer *t, const tp_lineage_candidate *c,
			   tp_transfer_scratch *scratch, tp_transfer_choice *p)
{
	int rc = 0;
	if (!(p->bases = calloc(c->nfiles, sizeof(*p->bases))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < c->nfiles && !rc; i++) {
		const tp_lineage_file *f = &c->files[i];
		tp_transfer_base *b = &p->bases[p->nbases];
		/* Two shards with the same bytes are one base: readers refuse a
		 * manifest that names an oid twice. */
		if (choice_has_base(p, f->oid))
			continue;
		tp_store_object_info info;
		memcpy(b->oid, f->oid, sizeof(b->oid));
		b->size = f->size;
		b->label = strdup(f->path);
		/* An oid: base that the repository does not know: the store's size. */
		if (f->size == TP_LINEAGE_SIZE_UNKNOWN &&
		    (rc = tp_store_object_stat(t->store, f->oid, &info)) == 0)
			b->size = info.size;
		if (!rc)
			rc = base_bytes(t, f->oid, b->size, f->local, scratch,
					t->defer_base_hash ? &b->unverified : NULL, &b->path);
		if (!rc && (!b->path || !b->label))
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		p->nbases++;
		if (!rc) {
			int d = tp_transfer_stored_depth(t, f->oid);
			if (d + 1 > p->depth)
				p->depth = d + 1;
		}
	}
	return rc;
}

/* Why candidate v was not estimated, one line. */
static int verdict_set(tp_transfer_candidate *v, tp_transfer_verdict verdict, const char *fmt,
		       ...) __attribute__((format(printf, 3, 4)));

static int verdict_set(tp_transfer_candidate *v, tp_transfer_verdict verdict, const char *fmt,
		       ...)
{
	tp_buf why = TP_BUF_INIT(1024);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(&why, fmt, ap);
	va_end(ap);
	v->verdict = verdict;
	v->why = tp_buf_detach(&why);
	return rc;
}

/* Estimate each candidate and pick the one with the smallest delta, if it
 * beats the whole file; pl->chosen.nbases == 0 means store whole. The
 * whole file is estimated last, and only when some candidate was: it is
 * only compared with the best one. */
static int choose(tp_transfer *t, const char *path, const tp_lineage *l, tp_transfer_planned *pl)
{
	tp_transfer_choice *best = &pl->chosen;
	tp_transfer_plan *plan = &pl->plan;
	tp_buf cands = TP_BUF_INIT(4096); /* the candidates' part of the reason */
	tp_buf_init(&best->reason, 4096);
	if (!l || l->ncandidates == 0)
		/* Nothing to compare with: no need to estimate the whole file. */
		return tp_buf_adds(&best->reason, "whole: no base candidate");
	uint64_t best_est = TP_TRANSFER_UNESTIMATED;
	long best_i = -1;
	int rc = 0;
	for (size_t i = 0; i < l->ncandidates && !rc; i++) {
		const tp_lineage_candidate *c = &l->candidates[i];
		tp_transfer_candidate *v = &plan->candidates[i];
		tp_transfer_choice p = { .source = tp_lineage_source_name(c->source),
					 .evidence = c->evidence };
		uint64_t est = 0;
		if (i >= TP_TRANSFER_CANDIDATES_MAX) {
			rc = verdict_set(v, TP_TRANSFER_VERDICT_SKIPPED, "only the first %d candidates "
					 "are estimated", TP_TRANSFER_CANDIDATES_MAX);
			continue;
		}
		if ((rc = candidate_bases(t, c, &pl->scratch, &p)) != 0) {
			tp_trace("candidate %s: %s", c->evidence, tp_error_last());
			rc = rc == TP_ENOTFOUND
				     ? verdict_set(v, TP_TRANSFER_VERDICT_UNAVAILABLE,
						   "bytes not on this machine or in the store")
				     : verdict_set(v, TP_TRANSFER_VERDICT_UNAVAILABLE, "%s",
						   tp_error_last());
			if (!rc)
				rc = tp_buf_addf_cut(&cands, "; %s: unavailable", c->files[0].oid);
			tp_transfer_choice_clear(&p);
			continue;
		}
		v->depth = p.depth;
		if (p.depth > t->maxchain) {
			rc = verdict_set(v, TP_TRANSFER_VERDICT_TOO_DEEP, "chain depth %d over "
					 "tenpak.maxchain %d", p.depth, t->maxchain);
			if (!rc)
				rc = tp_buf_addf_cut(&cands, "; %.12s: chain depth %d over "
						     "tenpak.maxchain %d", c->files[0].oid,
						     p.depth, t->maxchain);
			tp_transfer_choice_clear(&p);
			continue;
		}
		char **paths = tp_transfer_choice_paths(&p);
		rc = paths ? estimate(t, path, paths, p.nbases, 0, &est, &p.layout)
			   : tp_error_set(TP_ENOMEM, "out of memory");
		free(paths);
		if (rc) {
			tp_transfer_choice_clear(&p);
			break;
		}
		v->verdict = TP_TRANSFER_VERDICT_ESTIMATED;
		v->estimate = est;
		rc = tp_buf_addf_cut(&cands, "; %s %.12s: estimated %llu bytes", p.source,
				     c->files[0].oid, (unsigned long long)est);
		if (est < best_est) {
			best_est = est;
			best_i = (long)i;
			tp_buf reason = best->reason;
			best->reason = (tp_buf)TP_BUF_INIT(0);
			tp_transfer_choice_clear(best);
			*best = p;
			best->reason = reason;
		} else {
			tp_transfer_choice_clear(&p);
		}
	}
	if (!rc && best_i < 0)
		rc = tp_buf_adds(&best->reason, "whole: no candidate estimated");
	else if (!rc && (rc = estimate_whole(t, path, best_est, &plan->whole)) == 0)
		rc = tp_buf_addf_cut(&best->reason, "whole: estimated %llu bytes",
				     (unsigned long long)plan->whole);
	if (!rc && cands.ptr)
		rc = tp_buf_addf_cut(&best->reason, "%s", cands.ptr);
	tp_buf_free(&cands);
	if (!rc && best_i >= 0 && tp_transfer_delta_wins(best_est, plan->whole)) {
		plan->choice = best_i;
	} else if (best->nbases) {
		/* Whole after all: the chosen choice keeps its reason only. */
		tp_buf reason = best->reason;
		best->reason = (tp_buf)TP_BUF_INIT(0);
		tp_transfer_choice_clear(best);
		best->reason = reason;
	}
	return rc;
}

int tp_transfer_plan_upload(tp_transfer *t, const char *path, const tp_lineage *lineage,
			    tp_transfer_plan **out)
{
	tp_transfer_planned *pl = calloc(1, sizeof(*pl));
	size_t n = lineage ? lineage->ncandidates : 0;
	if (!pl)
		return tp_error_set(TP_ENOMEM, "out of memory");
	pl->scratch = (tp_transfer_scratch)TP_TRANSFER_SCRATCH_INIT;
	pl->plan.whole = TP_TRANSFER_UNESTIMATED;
	pl->plan.choice = -1;
	pl->plan.ncandidates = n;
	int rc = n && !(pl->plan.candidates = calloc(n, sizeof(*pl->plan.candidates)))
			 ? tp_error_set(TP_ENOMEM, "out of memory")
			 : choose(t, path, lineage, pl);
	if (rc) {
		tp_transfer_plan_free(&pl->plan);
		return rc;
	}
	pl->plan.reason = pl->chosen.reason.ptr ? pl->chosen.reason.ptr : "";
	*out = &pl->plan;
	return 0;
}

void tp_transfer_plan_free(tp_transfer_plan *p)
{
	if (!p)
		return;
	tp_transfer_planned *pl = (tp_transfer_planned *)p;
	for (size_t i = 0; i < p->ncandidates; i++)
		free(p->candidates[i].why);
	free(p->candidates);
	tp_transfer_choice_clear(&pl->chosen);
	tp_transfer_scratch_clear(&pl->scratch);
	free(pl);
}
