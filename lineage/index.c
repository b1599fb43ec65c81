/*
 * The pointer index: where each LFS object sits in git, so that the agent,
 * which only gets oids from git-lfs, can read the metadata and history of
 * any version being pushed, not only the ones at a branch tip.
 *
 * Two parts. The tips: every pointer in the trees of HEAD and of the local
 * branches (read each time; they win, as the newest view of a file). The
 * history: for every commit reachable from HEAD, branches, tags and
 * remote-tracking refs, the pointers it changed against its first parent (all
 * of them for a root commit or the boundary of a shallow clone). A commit's
 * changes never change, so the history part is cached on disk
 * (<git-common-dir>/tenpak/pointer-index, format below) and the next run only
 * reads commits it has not seen. Agents run concurrently: each writes a
 * whole new file and renames it into place, so a reader sees one complete
 * version or another, every one of them valid.
 *
 * Cache format, one record per line:
 *   tenpak pointer index 1
 *   shallow <sha256 of the shallow file, or ->   (a different one: rescan)
 *   c <commit id> <committer time>               (a commit scanned)
 *   p <lfs oid> <size> <path>                    (a pointer it changed)
 *   end <number of c records>
 * A path escapes "\" as "\\" and a newline as "\n". The "c" records are
 * closed under ancestry: a scanned commit's ancestors were scanned too, so a
 * walk stops at the first scanned commit it meets; the "end" record proves
 * that none was lost (the oldest are last). Anything malformed discards the
 * whole file (the next run rebuilds it).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lineage_internal.h"
#include "tp_array.h"

#define CACHE_DIR "tenpak"
#define CACHE_FILE "pointer-index"
#define CACHE_MAGIC "tenpak pointer index 1"
#define CACHE_MAX (256u << 20) /* ~3M commits; larger is ignored and not written */
#define SHALLOW_MAX (16u << 20)
#define PATH_CAP 4096 /* deeper pointers cannot be checked out anyway */

/* ---- growable arrays and a set of commit ids ----------------------------------- */

/* Commits, pointers, refs or walk steps in one array: 64M is some 50 times
 * the Linux kernel's history, and still a bound on a repository that
 * never ends. */
#define ITEMS_MAX ((size_t)1 << 26)

/* Room for one more element in the array at p (holding n of *alloc). */
static int array_grow(void *p, size_t *alloc, size_t n, size_t elem)
{
	return tp_array_grow_(p, alloc, n, ITEMS_MAX, elem, 1);
}

/* Open addressing; the zero id marks an empty slot (no object has it). */
typedef struct oidset {
	git_oid *slots;
	size_t cap, n;
} oidset;

static size_t oidset_slot(const oidset *s, const git_oid *id)
{
	uint64_t h;
	memcpy(&h, id->id, sizeof(h));
	size_t i = (size_t)h & (s->cap - 1);
	while (!git_oid_is_zero(&s->slots[i]) && !git_oid_equal(&s->slots[i], id))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static bool oidset_has(const oidset *s, const git_oid *id)
{
	return s->cap && !git_oid_is_zero(&s->slots[oidset_slot(s, id)]);
}

static int oidset_add(oidset *s, const git_oid *id)
{
	if ((s->n + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		oidset bigger = { calloc(cap, sizeof(git_oid)), cap, 0 };
		if (!bigger.slots)
			return tp_error_set(TP_ENOMEM, "out of memory");
		for (size_t i = 0; i < s->cap; i++)
			if (!git_oid_is_zero(&s->slots[i]))
				bigger.slots[oidset_slot(&bigger, &s->slots[i])] = s->slots[i];
		bigger.n = s->n;
		free(s->slots);
		*s = bigger;
	}
	size_t i = oidset_slot(s, id);
	if (git_oid_is_zero(&s->slots[i])) {
		git_oid_cpy(&s->slots[i], id);
		s->n++;
	}
	return 0;
}

static void oidset_free(oidset *s)
{
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

/* ---- the index ------------------------------------------------------------ */

typedef struct entries {
	tp_lineage_entry *v;
	size_t n, alloc;
} entries;

/* A commit of the history part, with its entries [first, first + count). */
typedef struct scanned {
	git_oid id;
	int64_t time;
	size_t first, count;
} scanned;

struct tp_lineage_index {
	entries tips, hist;
	scanned *commits;
	size_t ncommits, acommits;
	oidset seen; /* ids of commits */
	size_t cached; /* commits that came from the cache file */
	const tp_lineage_entry **by_oid; /* tips and history, by oid then preference */
	size_t nby_oid;
	size_t seq;
};

static void entries_clear(entries *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].path);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

/* Forget the history part (a bad cache file). */
static void history_clear(tp_lineage_index *ix)
{
	entries_clear(&ix->hist);
	free(ix->commits);
	ix->commits = NULL;
	ix->ncommits = ix->acommits = ix->cached = 0;
	oidset_free(&ix->seen);
}

void tp_lineage_index_clear(tp_git_repo *r)
{
	tp_lineage_index *ix = r->index;
	if (!ix)
		return;
	entries_clear(&ix->tips);
	history_clear(ix);
	free(ix->by_oid);
	free(ix);
	r->index = NULL;
}

static int entry_add(tp_lineage_index *ix, entries *e, const char *path, size_t plen,
		     const char *oid, uint64_t size, const git_oid *commit, int64_t time, int tip)
{
	int rc = array_grow(&e->v, &e->alloc, e->n, sizeof(*e->v));
	if (rc)
		return rc;
	tp_lineage_entry *n = &e->v[e->n];
	memset(n, 0, sizeof(*n));
	if (!(n->path = strndup(path, plen)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	memcpy(n->oid, oid, TP_OID_HEXLEN + 1);
	n->size = size;
	git_oid_cpy(&n->commit, commit);
	n->time = time;
	n->tip = tip;
	n->seq = ix->seq++;
	e->n++;
	return 0;
}

static int commit_add(tp_lineage_index *ix, const git_oid *id, int64_t time)
{
	int rc = array_grow(&ix->commits, &ix->acommits, ix->ncommits, sizeof(*ix->commits));
	if (!rc)
		rc = oidset_add(&ix->seen, id);
	if (rc)
		return rc;
	scanned *c = &ix->commits[ix->ncommits++];
	git_oid_cpy(&c->id, id);
	c->time = time;
	c->first = ix->hist.n;
	c->count = 0;
	return 0;
}

/* ---- reading trees -------------------------------------------------------- */

typedef struct scan_ctx {
	git_repository *repo;
	git_odb *odb;
	tp_lineage_index *ix;
	entries *into;
	git_oid commit;
	int64_t time;
	int tip;
	char path[PATH_CAP];
} scan_ctx;

static int scan_blob(scan_ctx *s, const git_oid *id, size_t plen)
{
	size_t len;
	git_object_t type;
	git_odb_object *obj = NULL;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	/* Only small blobs can be pointers: check the size before reading. */
	if (git_odb_read_header(&len, &type, s->odb, id) != 0 || len > TP_LINEAGE_POINTER_MAX)
		return 0;
	if (git_odb_read(&obj, s->odb, id) != 0)
		return 0;
	bool ok = tp_lineage_pointer_parse(git_odb_object_data(obj), git_odb_object_size(obj), oid,
					   &size);
	git_odb_object_free(obj);
	return ok ? entry_add(s->ix, s->into, s->path, plen, oid, size, &s->commit, s->time, s->tip) : 0;
}

/* Pointers in tree now that differ from tree before (NULL: every one);
 * s->path holds the directory, plen bytes with its trailing slash. */
static int scan_tree(scan_ctx *s, git_tree *now, git_tree *before, size_t plen)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < git_tree_entrycount(now); i++) {
		const git_tree_entry *e = git_tree_entry_byindex(now, i);
		const git_tree_entry *old = before ? git_tree_entry_byname(before, git_tree_entry_name(e)) : NULL;
		git_object_t type = git_tree_entry_type(e);
		if (old && git_oid_equal(git_tree_entry_id(old), git_tree_entry_id(e)))
			continue;
		const char *name = git_tree_entry_name(e);
		size_t nlen = strlen(name);
		if (plen + nlen + 2 > sizeof(s->path))
			continue;
		memcpy(s->path + plen, name, nlen);
		s->path[plen + nlen] = '\0';
		if (type == GIT_OBJECT_BLOB && git_tree_entry_filemode(e) != GIT_FILEMODE_LINK) {
			rc = scan_blob(s, git_tree_entry_id(e), plen + nlen);
		} else if (type == GIT_OBJECT_TREE) {
			git_tree *sub = NULL, *osub = NULL;
			if (git_tree_lookup(&sub, s->repo, git_tree_entry_id(e)) != 0)
				continue;
			if (old && git_tree_entry_type(old) == GIT_OBJECT_TREE)
				git_tree_lookup(&osub, s->repo, git_tree_entry_id(old));
			s->path[plen + nlen] = '/';
			rc = scan_tree(s, sub, osub, plen + nlen + 1);
			git_tree_free(osub);
			git_tree_free(sub);
		}
	}
	return rc;
}

/* The pointers of one tip (HEAD is rank 0), once per distinct commit. */
static int scan_tip(scan_ctx *s, const git_oid *commit_id, int rank)
{
	git_commit *commit = NULL;
	git_tree *tree = NULL;
	for (size_t i = 0; i < s->ix->tips.n; i++)
		if (git_oid_equal(&s->ix->tips.v[i].commit, commit_id))
			return 0;
	if (git_commit_lookup(&commit, s->repo, commit_id) != 0 || git_commit_tree(&tree, commit) != 0) {
		git_commit_free(commit);
		return 0;
	}
	s->into = &s->ix->tips;
	git_oid_cpy(&s->commit, commit_id);
	s->time = git_commit_time(commit);
	s->tip = rank;
	int rc = scan_tree(s, tree, NULL, 0);
	git_tree_free(tree);
	git_commit_free(commit);
	return rc;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Commit ids of HEAD (when it names a commit: *head) and of the refs whose
 * names start with one of the prefixes, in that order, tags peeled. */
static int ref_tips(git_repository *repo, const char *const *prefixes, git_oid **out, size_t *n,
		    bool *head)
{
	git_reference_iterator *it = NULL;
	git_reference *ref;
	git_oid *ids = NULL;
	size_t count = 0, alloc = 0;
	int rc = 0;
	git_object *obj = NULL;
	*head = false;
	if (git_revparse_single(&obj, repo, "HEAD^{commit}") == 0) {
		rc = array_grow(&ids, &alloc, count, sizeof(*ids));
		if (!rc)
			git_oid_cpy(&ids[count++], git_object_id(obj));
		*head = !rc;
		git_object_free(obj);
	}
	if (!rc && git_reference_iterator_new(&it, repo) == 0) {
		while (!rc && git_reference_next(&ref, it) == 0) {
			bool want = false;
			for (size_t i = 0; prefixes[i] && !want; i++)
				want = has_prefix(git_reference_name(ref), prefixes[i]);
			obj = NULL;
			if (want && git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0 &&
			    (rc = array_grow(&ids, &alloc, count, sizeof(*ids))) == 0)
				git_oid_cpy(&ids[count++], git_object_id(obj));
			git_object_free(obj);
			git_reference_free(ref);
		}
		git_reference_iterator_free(it);
	}
	if (rc) {
		free(ids);
		return rc;
	}
	*out = ids;
	*n = count;
	return 0;
}

/* Every commit reachable from the refs that the cache has not seen: record
 * it and the pointers it changed against its first parent. */
static int scan_history(scan_ctx *s)
{
	static const char *const refs[] = { "refs/heads/", "refs/tags/", "refs/remotes/", NULL };
	git_oid *stack = NULL;
	size_t n = 0, alloc = 0;
	bool head;
	int rc = ref_tips(s->repo, refs, &stack, &n, &head);
	alloc = n;
	s->into = &s->ix->hist;
	s->tip = TP_LINEAGE_NOT_TIP;
	while (!rc && n > 0) {
		git_oid id = stack[--n];
		git_commit *commit = NULL, *parent = NULL;
		git_tree *tree = NULL, *ptree = NULL;
		if (oidset_has(&s->ix->seen, &id))
			continue;
		/* A missing commit is a parent beyond a shallow clone's boundary. */
		if (git_commit_lookup(&commit, s->repo, &id) != 0)
			continue;
		if (git_commit_tree(&tree, commit) != 0) {
			git_commit_free(commit);
			continue;
		}
		if (git_commit_parentcount(commit) > 0 && git_commit_parent(&parent, commit, 0) == 0)
			git_commit_tree(&ptree, parent);
		git_oid_cpy(&s->commit, &id);
		s->time = git_commit_time(commit);
		rc = commit_add(s->ix, &id, s->time);
		if (!rc)
			rc = scan_tree(s, tree, ptree, 0);
		if (!rc)
			s->ix->commits[s->ix->ncommits - 1].count =
				s->ix->hist.n - s->ix->commits[s->ix->ncommits - 1].first;
		for (unsigned i = 0; !rc && i < git_commit_parentcount(commit); i++) {
			const git_oid *p = git_commit_parent_id(commit, i);
			if (p && !oidset_has(&s->ix->seen, p) &&
			    (rc = array_grow(&stack, &alloc, n, sizeof(*stack))) == 0)
				git_oid_cpy(&stack[n++], p);
		}
		git_tree_free(ptree);
		git_commit_free(parent);
		git_tree_free(tree);
		git_commit_free(commit);
	}
	free(stack);
	return rc;
}

/* ---- the cache file ----------------------------------------------------------- */

/* sha256 of <common dir>/shallow, "-" when the clone is complete: a deeper
 * or complete clone has parents the cached boundary commits lacked. */
static int shallow_key(git_repository *repo, char out[TP_OID_HEXLEN + 1])
{
	char *path = NULL;
	tp_buf text = TP_BUF_INIT(SHALLOW_MAX);
	int rc = tp_path_join(&path, git_repository_commondir(repo), "shallow");
	if (rc)
		return rc;
	strcpy(out, "-");
	rc = tp_fs_read_regular(path, &text);
	if (rc == 0)
		tp_sha256_hex_of(text.ptr ? text.ptr : "", text.len, out);
	else if (rc == TP_ENOTFOUND)
		rc = 0;
	tp_buf_free(&text);
	free(path);
	return rc;
}

static int cache_path(git_repository *repo, bool dir_only, char **out)
{
	char *dir = NULL;
	int rc = tp_path_join(&dir, git_repository_commondir(repo), CACHE_DIR);
	if (rc || dir_only) {
		*out = dir;
		return rc;
	}
	rc = tp_path_join(out, dir, CACHE_FILE);
	free(dir);
	return rc;
}

/* One "c" or "p" record; false when malformed. */
static bool cache_line(tp_lineage_index *ix, char *line, int *rc)
{
	git_oid id;
	uint64_t v;
	const char *end;
	if (line[0] == 'c' && line[1] == ' ') {
		if (strlen(line) < 44 || line[42] != ' ' || git_oid_fromstrn(&id, line + 2, 40) != 0 ||
		    oidset_has(&ix->seen, &id))
			return false;
		bool neg = line[43] == '-';
		if (tp_parse_u64(line + 43 + neg, 0, INT64_MAX, &v) != 0)
			return false;
		*rc = commit_add(ix, &id, neg ? -(int64_t)v : (int64_t)v);
		return true;
	}
	if (line[0] != 'p' || line[1] != ' ' || ix->ncommits == 0 ||
	    strlen(line) < 2 + TP_OID_HEXLEN + 2 || line[2 + TP_OID_HEXLEN] != ' ')
		return false;
	char oid[TP_OID_HEXLEN + 1];
	memcpy(oid, line + 2, TP_OID_HEXLEN);
	oid[TP_OID_HEXLEN] = '\0';
	if (!tp_oid_valid(oid) ||
	    tp_parse_u64_prefix(line + 3 + TP_OID_HEXLEN, &end, 0, UINT64_MAX, &v) != 0 || *end != ' ')
		return false;
	/* Unescape the path in place. */
	char *path = (char *)end + 1, *w = path;
	for (const char *p = path; *p; p++) {
		if (*p != '\\') {
			*w++ = *p;
			continue;
		}
		if (p[1] == '\\')
			*w++ = '\\';
		else if (p[1] == 'n')
			*w++ = '\n';
		else
			return false;
		p++;
	}
	if (w == path || (size_t)(w - path) >= PATH_CAP)
		return false;
	scanned *c = &ix->commits[ix->ncommits - 1];
	*rc = entry_add(ix, &ix->hist, path, (size_t)(w - path), oid, v, &c->id, c->time,
			TP_LINEAGE_NOT_TIP);
	if (!*rc)
		c->count++;
	return true;
}

/* Load the cache into ix; a missing, stale or malformed file loads nothing. */
static int cache_load(git_repository *repo, tp_lineage_index *ix, const char *key)
{
	char *path = NULL;
	tp_buf b = TP_BUF_INIT(CACHE_MAX);
	int rc = cache_path(repo, false, &path);
	if (rc)
		return rc;
	int err = tp_fs_read_regular(path, &b);
	if (err == TP_ENOMEM) {
		rc = err;
		goto done;
	}
	if (err == TP_ENOTFOUND || err == TP_EINVAL)
		goto done; /* none yet, or not a file we wrote */
	if (err == TP_ETOOBIG) {
		tp_trace("%s: too large, ignored", path);
		goto done;
	}
	/* A complete file ends its last record with a newline. */
	if (err || b.len == 0 || b.ptr[b.len - 1] != '\n') {
		tp_trace("%s: unreadable or cut short, rescanning", path);
		goto done;
	}
	char *save = NULL, *line = strtok_r(b.ptr, "\n", &save);
	bool ok = line && strcmp(line, CACHE_MAGIC) == 0;
	line = ok ? strtok_r(NULL, "\n", &save) : NULL;
	ok = ok && line && strncmp(line, "shallow ", 8) == 0;
	if (ok && strcmp(line + 8, key) != 0) {
		tp_trace("%s: the clone's depth changed, rescanning", path);
		goto done;
	}
	bool end = false;
	while (ok && !rc && (line = strtok_r(NULL, "\n", &save)) != NULL) {
		uint64_t count;
		if (end)
			ok = false;
		else if (strncmp(line, "end ", 4) == 0)
			ok = end = tp_parse_u64(line + 4, 0, UINT64_MAX, &count) == 0 &&
				   count == ix->ncommits;
		else
			ok = cache_line(ix, line, &rc);
	}
	if (!rc && (!ok || !end)) {
		tp_trace("%s: malformed, rescanning", path);
		history_clear(ix);
	}
	ix->cached = ix->ncommits;
done:
	if (rc)
		history_clear(ix);
	tp_buf_free(&b);
	free(path);
	return rc;
}

static int escape_path(tp_buf *b, const char *path)
{
	int rc = 0;
	for (const char *p = path; !rc && *p; p++) {
		if (*p == '\\')
			rc = tp_buf_adds(b, "\\\\");
		else if (*p == '\n')
			rc = tp_buf_adds(b, "\\n");
		else
			rc = tp_buf_add(b, p, 1);
	}
	return rc;
}

static int cache_text(const tp_lineage_index *ix, const char *key, tp_buf *b)
{
	char hex[GIT_OID_HEXSZ + 1];
	int rc = tp_buf_addf(b, "%s\nshallow %s\n", CACHE_MAGIC, key);
	for (size_t i = 0; !rc && i < ix->ncommits; i++) {
		const scanned *c = &ix->commits[i];
		git_oid_tostr(hex, sizeof(hex), &c->id);
		rc = tp_buf_addf(b, "c %s %lld\n", hex, (long long)c->time);
		for (size_t k = c->first; !rc && k < c->first + c->count; k++) {
			const tp_lineage_entry *e = &ix->hist.v[k];
			rc = tp_buf_addf(b, "p %s %llu ", e->oid, (unsigned long long)e->size);
			if (!rc)
				rc = escape_path(b, e->path);
			if (!rc)
				rc = tp_buf_adds(b, "\n");
		}
	}
	return rc ? rc : tp_buf_addf(b, "end %zu\n", ix->ncommits);
}

/* Write the cache: a temp file renamed over the old one. A failure only
 * costs the next run a rescan, so it is logged, not returned. */
static void cache_store(git_repository *repo, const tp_lineage_index *ix, const char *key)
{
	char *dir = NULL, *path = NULL, *tmp = NULL;
	tp_buf b = TP_BUF_INIT(CACHE_MAX);
	int fd = -1;
	int rc = cache_text(ix, key, &b);
	if (!rc)
		rc = cache_path(repo, true, &dir);
	if (!rc)
		rc = cache_path(repo, false, &path);
	if (!rc)
		rc = tp_fs_mkdirs(dir);
	if (!rc)
		rc = tp_path_join(&tmp, dir, CACHE_FILE ".XXXXXX");
	if (!rc && (fd = mkstemp(tmp)) < 0)
		rc = tp_error_set_errno(TP_EIO, errno, "creating a file in %s", dir);
	if (!rc)
		rc = tp_fs_write_all(fd, b.ptr, b.len);
	if (!rc && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", tmp);
	if (fd >= 0 && close(fd) != 0 && !rc)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", tmp);
	if (!rc && rename(tmp, path) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "renaming %s", tmp);
	if (rc) {
		tp_trace("lineage index not cached: %s", tp_error_last());
		if (fd >= 0)
			unlink(tmp);
	}
	tp_buf_free(&b);
	free(tmp);
	free(path);
	free(dir);
}

/* ---- lookups ------------------------------------------------------------------ */

/* By oid; then tips (in rank order) before history; then newest commit;
 * then the one found last (a later scan is a newer view). */
static int by_oid_cmp(const void *va, const void *vb)
{
	const tp_lineage_entry *a = *(const tp_lineage_entry *const *)va;
	const tp_lineage_entry *b = *(const tp_lineage_entry *const *)vb;
	int c = strcmp(a->oid, b->oid);
	if (c)
		return c;
	unsigned ra = (unsigned)a->tip, rb = (unsigned)b->tip; /* NOT_TIP sorts last */
	if (ra != rb)
		return ra < rb ? -1 : 1;
	if (a->time != b->time)
		return a->time > b->time ? -1 : 1;
	return a->seq > b->seq ? -1 : a->seq < b->seq;
}

static int sort_index(tp_lineage_index *ix)
{
	size_t n = ix->tips.n + ix->hist.n, k = 0;
	if (!(ix->by_oid = calloc(n + 1, sizeof(*ix->by_oid))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < ix->tips.n; i++)
		ix->by_oid[k++] = &ix->tips.v[i];
	for (size_t i = 0; i < ix->hist.n; i++)
		ix->by_oid[k++] = &ix->hist.v[i];
	qsort(ix->by_oid, n, sizeof(*ix->by_oid), by_oid_cmp);
	ix->nby_oid = n;
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

int tp_lineage_index_build(tp_git_repo *r)
{
	static const char *const branches[] = { "refs/heads/", NULL };
	char key[TP_OID_HEXLEN + 1];
	struct timespec t0;
	git_oid *tips = NULL;
	size_t ntips = 0;
	scan_ctx *s = NULL;
	if (r->index)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	tp_lineage_index *ix = calloc(1, sizeof(*ix));
	int rc = ix ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc && !(s = calloc(1, sizeof(*s))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc && git_repository_odb(&s->odb, r->repo) != 0)
		rc = tp_git_fail(TP_EIO, "opening the object database");
	if (rc)
		goto done;
	s->repo = r->repo;
	s->ix = ix;
	/* Rank 0 is HEAD's alone: an unborn HEAD leaves it empty. */
	bool head;
	if ((rc = ref_tips(r->repo, branches, &tips, &ntips, &head)) != 0)
		goto done;
	for (size_t i = 0; !rc && i < ntips; i++)
		rc = scan_tip(s, &tips[i], head ? (int)i : (int)i + 1);
	/* Without a shallow key nothing cached can be trusted, nor written. */
	bool keyed = !rc && shallow_key(r->repo, key) == 0;
	if (!rc && keyed)
		rc = cache_load(r->repo, ix, key);
	if (!rc)
		rc = scan_history(s);
	if (!rc && keyed && ix->ncommits > ix->cached)
		cache_store(r->repo, ix, key);
	if (!rc)
		rc = sort_index(ix);
	if (!rc)
		tp_trace("lineage index: %zu pointers at %zu tips; history of %zu commits "
			 "(%zu cached, %zu scanned), %zu pointers; %.1f ms",
			 ix->tips.n, ntips, ix->ncommits, ix->cached, ix->ncommits - ix->cached,
			 ix->hist.n, ms_since(&t0));
done:
	if (s)
		git_odb_free(s->odb);
	free(s);
	free(tips);
	if (rc) {
		r->index = ix;
		tp_lineage_index_clear(r);
		return rc;
	}
	r->index = ix;
	return 0;
}

void tp_lineage_index_find(tp_git_repo *r, const char *oid,
			   const tp_lineage_entry *const **first, size_t *n)
{
	const tp_lineage_index *ix = r->index;
	size_t lo = 0, hi = ix ? ix->nby_oid : 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(ix->by_oid[mid]->oid, oid) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t end = lo;
	while (ix && end < ix->nby_oid && strcmp(ix->by_oid[end]->oid, oid) == 0)
		end++;
	*first = ix ? ix->by_oid + lo : NULL;
	*n = end - lo;
}

void tp_lineage_index_head(tp_git_repo *r, const tp_lineage_entry **first, size_t *n)
{
	const tp_lineage_index *ix = r->index;
	size_t k = 0;
	while (ix && k < ix->tips.n && ix->tips.v[k].tip == 0)
		k++;
	*first = ix ? ix->tips.v : NULL;
	*n = k;
}

/* ---- walking ancestry ---------------------------------------------------------- */

struct tp_lineage_walk {
	git_repository *repo;
	git_commit **heap; /* max-heap by committer time */
	size_t n, alloc;
	oidset seen;
	size_t left;
};

static bool newer(git_commit *a, git_commit *b)
{
	return git_commit_time(a) > git_commit_time(b);
}

static int heap_push(tp_lineage_walk *w, git_commit *c)
{
	int rc = array_grow(&w->heap, &w->alloc, w->n, sizeof(*w->heap));
	if (rc) {
		git_commit_free(c);
		return rc;
	}
	size_t i = w->n++;
	w->heap[i] = c;
	while (i > 0 && newer(w->heap[i], w->heap[(i - 1) / 2])) {
		git_commit *t = w->heap[i];
		w->heap[i] = w->heap[(i - 1) / 2];
		w->heap[(i - 1) / 2] = t;
		i = (i - 1) / 2;
	}
	return 0;
}

static git_commit *heap_pop(tp_lineage_walk *w)
{
	git_commit *top = w->heap[0];
	w->heap[0] = w->heap[--w->n];
	for (size_t i = 0;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < w->n && newer(w->heap[l], w->heap[m]))
			m = l;
		if (r < w->n && newer(w->heap[r], w->heap[m]))
			m = r;
		if (m == i)
			break;
		git_commit *t = w->heap[i];
		w->heap[i] = w->heap[m];
		w->heap[m] = t;
		i = m;
	}
	return top;
}

/* Queue the commit id unless seen; a missing one ends its line. */
static int walk_add(tp_lineage_walk *w, const git_oid *id)
{
	git_commit *c = NULL;
	if (oidset_has(&w->seen, id))
		return 0;
	int rc = oidset_add(&w->seen, id);
	if (rc || git_commit_lookup(&c, w->repo, id) != 0)
		return rc;
	return heap_push(w, c);
}

int tp_lineage_walk_new(tp_lineage_walk **out, git_repository *repo, const git_oid *start,
			size_t max)
{
	tp_lineage_walk *w = calloc(1, sizeof(*w));
	if (!w)
		return tp_error_set(TP_ENOMEM, "out of memory");
	w->repo = repo;
	w->left = max;
	int rc = walk_add(w, start);
	if (rc) {
		tp_lineage_walk_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int tp_lineage_walk_next(tp_lineage_walk *w, git_commit **out)
{
	if (w->n == 0 || w->left == 0)
		return TP_ENOTFOUND;
	w->left--;
	git_commit *c = heap_pop(w);
	int rc = 0;
	for (unsigned i = 0; !rc && i < git_commit_parentcount(c); i++) {
		const git_oid *p = git_commit_parent_id(c, i);
		if (p)
			rc = walk_add(w, p);
	}
	if (rc) {
		git_commit_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void tp_lineage_walk_free(tp_lineage_walk *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		git_commit_free(w->heap[i]);
	free(w->heap);
	oidset_free(&w->seen);
	free(w);
}
