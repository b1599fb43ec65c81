/*
 * The tp_lineage result as detection builds it: files, candidates (kept
 * most trusted first, without duplicates or the target itself), their
 * evidence, and freeing it all.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lineage_internal.h"

const char *tp_lineage_source_name(tp_lineage_source s)
{
	switch (s) {
	case TP_LINEAGE_SOURCE_OVERRIDE: return "override";
	case TP_LINEAGE_SOURCE_METADATA: return "metadata";
	case TP_LINEAGE_SOURCE_HISTORY: return "history";
	default: return "?";
	}
}

int tp_lineage_file_set(tp_lineage_file *f, const char *path, const char *oid, uint64_t size,
			const char *local)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->oid, oid, TP_OID_HEXLEN + 1);
	f->size = size;
	f->path = strdup(path);
	f->local = local ? strdup(local) : NULL;
	return f->path && (!local || f->local) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

void tp_lineage_file_clear(tp_lineage_file *f)
{
	free(f->path);
	free(f->local);
	memset(f, 0, sizeof(*f));
}

void tp_lineage_candidate_clear(tp_lineage_candidate *c)
{
	for (size_t i = 0; i < c->nfiles; i++)
		tp_lineage_file_clear(&c->files[i]);
	free(c->files);
	free(c->evidence);
	memset(c, 0, sizeof(*c));
}

int tp_lineage_candidate_add_file(tp_lineage_candidate *c, const tp_lineage_file *f)
{
	tp_lineage_file *files = realloc(c->files, (c->nfiles + 1) * sizeof(*files));
	if (!files)
		return tp_error_set(TP_ENOMEM, "out of memory");
	c->files = files;
	return tp_lineage_file_set(&c->files[c->nfiles++], f->path, f->oid, f->size, f->local);
}

int tp_lineage_candidate_add(tp_lineage *l, tp_lineage_candidate *c)
{
	bool keep = c->nfiles > 0;
	for (size_t i = 0; keep && i < c->nfiles; i++)
		keep = strcmp(c->files[i].oid, l->target.oid) != 0;
	for (size_t i = 0; keep && i < l->ncandidates; i++) {
		const tp_lineage_candidate *o = &l->candidates[i];
		bool same = o->nfiles == c->nfiles;
		for (size_t k = 0; same && k < c->nfiles; k++)
			same = strcmp(o->files[k].oid, c->files[k].oid) == 0;
		keep = !same;
	}
	if (!keep) {
		tp_lineage_candidate_clear(c);
		return 0;
	}
	tp_lineage_candidate *cs = realloc(l->candidates, (l->ncandidates + 1) * sizeof(*cs));
	if (!cs) {
		tp_lineage_candidate_clear(c);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	l->candidates = cs;
	cs[l->ncandidates++] = *c;
	memset(c, 0, sizeof(*c));
	return 0;
}

char *tp_lineage_where_text(const char *fmt, ...)
{
	tp_buf b = TP_BUF_INIT(TP_LINEAGE_EVIDENCE_MAX);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(&b, fmt, ap);
	va_end(ap);
	if (rc)
		tp_buf_free(&b);
	return tp_buf_detach(&b);
}

/* Evidence is for people: a long name or a deep path is cut, never a
 * reason to fail a push. */
int tp_lineage_candidate_evidence(tp_lineage_candidate *c, const char *fmt, ...)
{
	tp_buf b = TP_BUF_INIT(TP_LINEAGE_EVIDENCE_MAX);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(&b, fmt, ap);
	va_end(ap);
	if (rc) {
		tp_buf_free(&b);
		return rc;
	}
	free(c->evidence);
	c->evidence = tp_buf_detach(&b);
	return 0;
}

void tp_lineage_free(tp_lineage *l)
{
	if (!l)
		return;
	tp_lineage_file_clear(&l->target);
	for (size_t i = 0; i < l->ncandidates; i++)
		tp_lineage_candidate_clear(&l->candidates[i]);
	free(l->candidates);
	for (size_t i = 0; i < l->nunresolved; i++) {
		tp_lineage_unresolved *u = &l->unresolved[i];
		free(u->name);
		free(u->where);
		free(u->reason);
		free(u->key);
	}
	free(l->unresolved);
	free(l);
}
