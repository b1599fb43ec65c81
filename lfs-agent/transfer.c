/*
 * Upload: find the target's lineage, estimate a delta against each base
 * candidate whose bytes we can get, keep the smallest if it beats storing the
 * file whole, rebuild it once to prove it, then store it with a manifest that
 * names its bases by oid.
 *
 * Download: read the manifest, get each base from the cheapest place (this
 * repository's LFS storage, the Hugging Face cache, else the store, rebuilding
 * deltas recursively), apply, and verify the sha256 against the oid.
 */
#include "transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tp_delta.h"

/* ---- scratch files --------------------------------------------------------- */

/* A new empty file in the scratch directory; *path is malloc'd. */
static int scratch_new(tp_transfer *t, const char *what, char **path)
{
	char name[64];
	snprintf(name, sizeof(name), "tenpak-%s-XXXXXX", what);
	int rc = tp_path_join(path, t->tmp_dir, name);
	if (rc)
		return rc;
	int fd = mkstemp(*path);
	if (fd < 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "creating a file in %s",
					t->tmp_dir);
		free(*path);
		*path = NULL;
		return rc;
	}
	close(fd);
	return 0;
}

static void scratch_drop(char *path)
{
	if (path) {
		unlink(path);
		free(path);
	}
}

/* The bases one upload or download rebuilt from the store into scratch
 * files, by oid: each is rebuilt once however many candidates name it, and
 * the files are removed when the operation ends. */
typedef struct kept_base {
	char oid[TP_OID_HEXLEN + 1];
	char *path;
} kept_base;

typedef struct scratch_list {
	kept_base *v;
	size_t n;
} scratch_list;

/* Takes path, even on failure. */
static int scratch_keep(scratch_list *l, const char *oid, char *path)
{
	kept_base *v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v) {
		scratch_drop(path);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	l->v = v;
	memcpy(v[l->n].oid, oid, sizeof(v[l->n].oid));
	v[l->n++].path = path;
	return 0;
}

/* The kept file of oid, or NULL; l may be NULL. */
static const char *scratch_find(const scratch_list *l, const char *oid)
{
	for (size_t i = 0; l && i < l->n; i++)
		if (strcmp(l->v[i].oid, oid) == 0)
			return l->v[i].path;
	return NULL;
}

static void scratch_clear(scratch_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		scratch_drop(l->v[i].path);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* ---- local copies ------------------------------------------------------------ */

/* What hashing one local file found, valid while the file keeps its
 * identity, size and times. */
typedef struct local_hash {
	char *path;
	dev_t dev;
	ino_t ino;
	uint64_t size;
	struct timespec mtime, ctime;
	char sha256[TP_OID_HEXLEN + 1];
} local_hash;

struct tp_transfer_hashes {
	local_hash *v;
	size_t n;
};

static void hashes_free(tp_transfer_hashes *h)
{
	for (size_t i = 0; h && i < h->n; i++)
		free(h->v[i].path);
	if (h)
		free(h->v);
	free(h);
}

static bool same_state(const local_hash *h, const struct stat *st)
{
	return h->dev == st->st_dev && h->ino == st->st_ino && h->size == (uint64_t)st->st_size &&
	       h->mtime.tv_sec == st->st_mtim.tv_sec && h->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       h->ctime.tv_sec == st->st_ctim.tv_sec && h->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* sha256 of the regular file at path into hex: remembered in t->hashes
 * while the file stays the same, so a push of many objects hashes a shared
 * base once. *fresh tells whether it was hashed now. */
static int local_sha256(tp_transfer *t, const char *path, char hex[TP_OID_HEXLEN + 1], bool *fresh)
{
	tp_transfer_hashes *h = t->hashes;
	struct stat st, after;
	*fresh = false;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
		return tp_error_set(TP_EINVAL, "%s is not a regular file", path);
	for (size_t i = 0; h && i < h->n; i++) {
		if (strcmp(h->v[i].path, path) == 0 && same_state(&h->v[i], &st)) {
			memcpy(hex, h->v[i].sha256, TP_OID_HEXLEN + 1);
			return 0;
		}
	}
	uint64_t len = 0;
	int rc = tp_sha256_file(path, hex, &len);
	if (rc)
		return rc;
	*fresh = true;
	tp_trace("hashed %s: sha256 %s", path, hex);
	local_hash e = { .dev = st.st_dev, .ino = st.st_ino, .size = (uint64_t)st.st_size,
			 .mtime = st.st_mtim, .ctime = st.st_ctim };
	/* A file that changed while it was hashed gives no verdict. */
	if (stat(path, &after) != 0 || !same_state(&e, &after) || len != e.size)
		return tp_error_set(TP_EIO, "%s changed while it was hashed", path);
	local_hash *v = h ? realloc(h->v, (h->n + 1) * sizeof(*v)) : NULL;
	if (v) {
		h->v = v;
		memcpy(e.sha256, hex, sizeof(e.sha256));
		if ((e.path = strdup(path)) != NULL)
			v[h->n++] = e;
	}
	return 0;
}

/* True when the file at path holds object oid of size bytes. A local copy
 * is trusted for its bytes only: an HF cache blob is named by its sha256,
 * but another user of a shared cache, or a bad disk, can change what is in
 * it, and a delta made or proven against wrong bytes would reach the store
 * where nobody could rebuild it. */
static bool local_copy_ok(tp_transfer *t, const char *path, const char *oid, uint64_t size)
{
	char hex[TP_OID_HEXLEN + 1];
	bool fresh;
	struct stat st;
	if (stat(path, &st) == 0 && (uint64_t)st.st_size != size) {
		tp_log(TP_LOG_WARN, "not using %s for object %s: it is %llu bytes, not %llu", path,
		       oid, (unsigned long long)st.st_size, (unsigned long long)size);
		return false;
	}
	if (local_sha256(t, path, hex, &fresh) != 0) {
		tp_log(TP_LOG_WARN, "not using %s for object %s: %s", path, oid, tp_error_last());
		return false;
	}
	if (strcmp(hex, oid) == 0)
		return true;
	if (fresh)
		tp_log(TP_LOG_WARN, "not using %s for object %s: its bytes hash to %s (changed or "
		       "corrupt)", path, oid, hex);
	return false;
}

/* A verified copy of object oid on this machine, tried in order: hint (a
 * file lineage found, may be NULL), this repository's LFS storage, the
 * Hugging Face cache. TP_ENOTFOUND when none is good, and always in
 * store-only mode (fsck). */
static int local_copy(tp_transfer *t, const char *oid, uint64_t size, const char *hint,
		      char **path)
{
	if (t->store_only)
		return TP_ENOTFOUND;
	if (hint && local_copy_ok(t, hint, oid, size))
		return (*path = strdup(hint)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	/* tp_lineage_find_local prefers the repository's copy; without the
	 * repository it looks in the HF cache only, the next place to try. */
	tp_git_repo *from[2] = { t->repo, NULL };
	for (int i = 0; i < (t->repo ? 2 : 1); i++) {
		char *p = NULL;
		if (tp_lineage_find_local(from[i], oid, size, &p) != 0)
			break;
		if (local_copy_ok(t, p, oid, size)) {
			*path = p;
			return 0;
		}
		free(p);
	}
	return TP_ENOTFOUND;
}

/* ---- setup --------------------------------------------------------------- */

const char *tp_sig_status_name(tp_sig_status s)
{
	switch (s) {
	case TP_SIG_NONE: return "no manifest";
	case TP_SIG_UNSIGNED: return "unsigned";
	case TP_SIG_TRUSTED: return "signed, trusted";
	case TP_SIG_VALID: return "signed";
	case TP_SIG_UNTRUSTED: return "signed, untrusted key";
	case TP_SIG_BAD: return "bad signature";
	default: return "?";
	}
}

/* "~/x" is relative to HOME, as git does for paths in its config. */
static int expand_home(const char *path, char **out)
{
	const char *home = getenv("HOME");
	if (strncmp(path, "~/", 2) == 0 && home && *home)
		return tp_path_join(out, home, path + 2);
	*out = strdup(path);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static int trusted_add(tp_transfer *t, const char *key, size_t len)
{
	char **v = realloc(t->trusted, (t->ntrusted + 1) * sizeof(*v));
	if (!v)
		return tp_error_set(TP_ENOMEM, "out of memory");
	t->trusted = v;
	if (!(v[t->ntrusted] = strndup(key, len)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	t->ntrusted++;
	return 0;
}

static int provenance_config(tp_transfer *t, tp_git_repo *repo)
{
	char *v = NULL, *path = NULL;
	int rc = 0;
	t->verify = TP_VERIFY_IF_SIGNED;
	if (tp_git_config_get(repo, "tenpak.verify", &v) == 0) {
		if (strcmp(v, "off") == 0)
			t->verify = TP_VERIFY_OFF;
		else if (strcmp(v, "required") == 0)
			t->verify = TP_VERIFY_REQUIRED;
		else if (strcmp(v, "if-signed") != 0)
			rc = tp_error_set(TP_ECONFIG, "tenpak.verify must be off, if-signed or required, "
					  "not \"%s\"", v);
		free(v);
		v = NULL;
	}
	if (!rc && tp_git_config_get(repo, "tenpak.trustedkeys", &v) == 0) {
		for (char *p = v; !rc && *p;) {
			size_t skip = strspn(p, " \t,"), len;
			p += skip;
			len = strcspn(p, " \t,");
			if (len)
				rc = trusted_add(t, p, len);
			p += len;
		}
		free(v);
		v = NULL;
	}
	if (!rc && t->verify == TP_VERIFY_REQUIRED && t->ntrusted == 0)
		rc = tp_error_set(TP_ECONFIG, "tenpak.verify is required but tenpak.trustedkeys "
				  "lists no key");
	if (!rc && tp_git_config_get(repo, "tenpak.signingkey", &v) == 0) {
		rc = expand_home(v, &path);
		if (!rc)
			rc = tp_sign_key_load(&t->signer, path);
		if (rc)
			tp_error_wrap(TP_ECONFIG, "tenpak.signingkey");
		free(path);
		free(v);
	}
	return rc ? TP_ECONFIG : 0;
}

/* A whole number from git config key, 0 to max; TP_ENOTFOUND when unset. */
static int config_number(tp_git_repo *repo, const char *key, long max, long *out)
{
	char *v = NULL, *end;
	int rc = tp_git_config_get(repo, key, &v);
	if (rc)
		return rc;
	errno = 0;
	long n = strtol(v, &end, 10);
	bool bad = errno || end == v || *end || n < 0 || n > max;
	free(v);
	if (bad)
		return tp_error_set(TP_ECONFIG, "%s must be a number from 0 to %ld", key, max);
	*out = n;
	return 0;
}

int tp_transfer_init(tp_transfer *t, tp_store *store, tp_git_repo *repo, const char *tmp_dir)
{
	memset(t, 0, sizeof(*t));
	t->store = store;
	t->repo = repo;
	t->maxchain = TP_TRANSFER_MAXCHAIN_DEFAULT;
	t->rebuild_factor = TP_TRANSFER_REBUILD_FACTOR_DEFAULT;
	/* Every agent may use every core: a push of one big model, the common
	 * case, then runs at full speed, and several objects at once cost only
	 * some oversubscription. */
	long cores = tp_cpu_count();
	t->threads = cores > 0 ? (unsigned)cores : 1;
	long n;
	int rc = config_number(repo, "tenpak.maxchain", TP_TRANSFER_CHAIN_LIMIT, &n);
	if (rc == 0)
		t->maxchain = (int)n;
	else if (rc != TP_ENOTFOUND)
		return rc;
	rc = config_number(repo, "tenpak.rebuildfactor", TP_TRANSFER_REBUILD_FACTOR_MAX, &n);
	if (rc == 0)
		t->rebuild_factor = (unsigned)n;
	else if (rc != TP_ENOTFOUND)
		return rc;
	if (!(t->tmp_dir = strdup(tmp_dir)) || !(t->hashes = calloc(1, sizeof(*t->hashes))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	rc = provenance_config(t, repo);
	return rc ? rc : tp_fs_mkdirs(t->tmp_dir);
}

void tp_transfer_clear(tp_transfer *t)
{
	free(t->tmp_dir);
	hashes_free(t->hashes);
	tp_sign_key_free(t->signer);
	for (size_t i = 0; i < t->ntrusted; i++)
		free(t->trusted[i]);
	free(t->trusted);
	memset(t, 0, sizeof(*t));
}

static void codec_progress(void *ctx, uint64_t done, uint64_t total)
{
	tp_transfer *t = ctx;
	if (t->progress)
		t->progress(t->progress_ctx, done, total);
}

static tp_delta_opts codec_opts(tp_transfer *t, bool report)
{
	tp_delta_opts o = { .threads = t->threads };
	if (report) {
		o.progress = codec_progress;
		o.progress_ctx = t;
	}
	return o;
}

/* ---- manifests ------------------------------------------------------------- */

typedef struct base_ref {
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	char *path;  /* local bytes */
	char *label; /* repository path or HF cache path, for the manifest */
} base_ref;

typedef struct plan {
	base_ref *bases;
	size_t nbases;
	int depth;
	const char *source;
	const char *evidence;
	tp_buf reason;
} plan;

static void plan_clear(plan *p)
{
	for (size_t i = 0; i < p->nbases; i++) {
		free(p->bases[i].path);
		free(p->bases[i].label);
	}
	free(p->bases);
	tp_buf_free(&p->reason);
	memset(p, 0, sizeof(*p));
}

static int manifest_text(const tp_transfer *t, const char *oid, uint64_t size, const plan *p,
			 char **text)
{
	tp_store_manifest m = { .size = size, .codec_version = TP_DELTA_VERSION, .depth = p->depth,
				.source = (char *)(p->source ? p->source : "none"),
				.evidence = (char *)(p->evidence ? p->evidence : ""),
				.choice = p->reason.ptr ? p->reason.ptr : (char *)"" };
	memcpy(m.oid, oid, sizeof(m.oid));
	m.nbases = p->nbases;
	m.bases = calloc(p->nbases + 1, sizeof(*m.bases));
	if (!m.bases)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < p->nbases; i++) {
		memcpy(m.bases[i].oid, p->bases[i].oid, sizeof(m.bases[i].oid));
		m.bases[i].size = p->bases[i].size;
		m.bases[i].path = p->bases[i].label;
	}
	char signer[TP_SIGN_PUBLIC_TEXT_MAX], sig[TP_SIGN_TEXT_MAX];
	tp_buf canon = TP_BUF_INIT(1 << 20);
	int rc = 0;
	if (t->signer) {
		rc = tp_store_manifest_canonical(&m, &canon);
		if (!rc)
			rc = tp_sign(t->signer, canon.ptr, canon.len, sig);
		tp_sign_key_public(t->signer, signer);
		m.signer = signer;
		m.signature = sig;
	}
	if (!rc)
		rc = tp_store_manifest_build(&m, text);
	tp_buf_free(&canon);
	free(m.bases);
	return rc;
}

static bool trusted(const tp_transfer *t, const char *key)
{
	for (size_t i = 0; i < t->ntrusted; i++)
		if (strcmp(t->trusted[i], key) == 0)
			return true;
	return false;
}

static tp_sig_status signature_status(const tp_transfer *t, const tp_store_manifest *m)
{
	tp_buf canon = TP_BUF_INIT(1 << 20);
	if (!m->signature)
		return TP_SIG_UNSIGNED;
	int rc = tp_store_manifest_canonical(m, &canon);
	if (!rc)
		rc = tp_sign_verify(m->signer, canon.ptr, canon.len, m->signature);
	tp_buf_free(&canon);
	if (rc)
		return TP_SIG_BAD;
	if (!t->ntrusted)
		return TP_SIG_VALID;
	return trusted(t, m->signer) ? TP_SIG_TRUSTED : TP_SIG_UNTRUSTED;
}

/* tenpak.verify applied to one manifest. */
static int check_signature(const tp_transfer *t, const tp_store_manifest *m, const char *oid)
{
	if (t->verify == TP_VERIFY_OFF)
		return 0;
	tp_sig_status st = signature_status(t, m);
	if (st == TP_SIG_BAD)
		return tp_error_set(TP_EAUTH, "object %s: the manifest's signature does not verify "
				    "(key %s)", oid, m->signer);
	if (st == TP_SIG_UNTRUSTED)
		return tp_error_set(TP_EAUTH, "object %s: manifest signed by %s, which is not in "
				    "tenpak.trustedkeys", oid, m->signer);
	if (t->verify == TP_VERIFY_REQUIRED && st != TP_SIG_TRUSTED)
		return tp_error_set(TP_EAUTH, "object %s: the manifest is unsigned and tenpak.verify "
				    "is required", oid);
	return 0;
}

/* The manifest of object oid, checked to describe that object and to
 * satisfy tenpak.verify. */
static int manifest_load(const tp_transfer *t, tp_store_manifest **out, const char *text,
			 const char *oid, uint64_t size)
{
	int rc = tp_store_manifest_parse(out, text, strlen(text));
	if (rc)
		return tp_error_wrap(rc, "object %s", oid);
	if (strcmp((*out)->oid, oid) != 0 || (*out)->size != size)
		rc = tp_error_set(TP_ECORRUPT, "object %s: its manifest describes another object", oid);
	else
		rc = check_signature(t, *out, oid);
	if (rc) {
		tp_store_manifest_free(*out);
		*out = NULL;
	}
	return rc;
}

int tp_transfer_inspect(tp_transfer *t, const char *oid, tp_transfer_object *out)
{
	tp_store_object_info info;
	tp_store_manifest *m = NULL;
	char *text = NULL;
	int rc = tp_store_object_manifest(t->store, oid, &info, &text);
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	out->kind = info.kind;
	out->size = info.size;
	out->stored = info.stored_size;
	if (text && (rc = tp_store_manifest_parse(&m, text, strlen(text))) == 0) {
		out->depth = m->depth;
		out->nbases = m->nbases;
		out->signature = signature_status(t, m);
		if (m->signer)
			snprintf(out->signer, sizeof(out->signer), "%s", m->signer);
	}
	tp_store_manifest_free(m);
	free(text);
	return rc;
}

tp_sig_status tp_transfer_signature(const tp_transfer *t, const tp_store_manifest *m)
{
	return signature_status(t, m);
}

/* Chain depth of a stored object: 0 when whole or absent. */
static int stored_depth(tp_transfer *t, const char *oid)
{
	tp_store_object_info info;
	char *text = NULL;
	int depth = 0;
	tp_store_manifest *m = NULL;
	if (tp_store_object_manifest(t->store, oid, &info, &text) == 0 && text &&
	    tp_store_manifest_parse(&m, text, strlen(text)) == 0)
		depth = m->depth;
	tp_store_manifest_free(m);
	free(text);
	return depth;
}

/* ---- download ------------------------------------------------------------- */

/* Apply a delta payload into out and prove the result is object oid: the
 * codec hashes what it rebuilds, and that hash must be the oid. A delta that
 * claims another size than expect is refused before anything is written (a
 * hostile one could claim terabytes of "same as base" chunks and fill the
 * disk). A NULL out only checks: nothing is opened or written. */
static int apply_payload(tp_transfer *t, const char *payload, char **bases, size_t nbases,
			 const char *oid, uint64_t expect, const char *out, bool report)
{
	int in = open(payload, O_RDONLY | O_CLOEXEC);
	int fd = out ? open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
	tp_delta_stats stats;
	char hex[TP_OID_HEXLEN + 1];
	int rc = 0;
	if (in < 0 || (out && fd < 0)) {
		rc = tp_error_set_errno(TP_EIO, errno, "opening scratch files");
		goto done;
	}
	tp_delta_opts o = codec_opts(t, report);
	o.expect_size = expect;
	rc = tp_delta_apply_to(tp_delta_fd_read, &in, (const char *const *)bases, nbases,
			       out ? tp_delta_fd_write : NULL, &fd, &o, &stats);
	if (rc)
		goto done;
	tp_sha256_hex(stats.sha256, hex);
	if (strcmp(hex, oid) != 0) {
		rc = tp_error_set(TP_ECORRUPT, "object %s rebuilt with sha256 %s: the stored object "
				  "or a base is corrupt", oid, hex);
		goto done;
	}
	if (out && fsync(fd) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", out);
done:
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* A rebuild is planned before it starts: every manifest under the object is
 * read and checked, each distinct object becomes one node, and the nodes
 * taken from the store are rebuilt once each, bases first, each scratch
 * file removed as soon as the last object that reads it is rebuilt. */
typedef struct rebuild_node {
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	bool from_store;           /* else path is a local copy or a kept base */
	bool visiting;             /* on the path being planned: a cycle if met again */
	tp_store_object_info info; /* from the store */
	size_t *bases;             /* the nodes its stream reads */
	size_t nbases;
	unsigned users;            /* rebuilds still to run that read it */
	char *path;
	bool scratch;              /* path is this rebuild's scratch file */
} rebuild_node;

/* Distinct objects a plan may name (local ones included), and its index:
 * open addressing, at most half full. */
#define GRAPH_NODES_MAX 4096
#define GRAPH_SLOTS 8192

typedef struct rebuild_graph {
	rebuild_node *v;
	size_t n;
	size_t slot[GRAPH_SLOTS]; /* node index + 1; 0 is empty */
	size_t *order;            /* nodes from the store, each after its bases */
	size_t norder;
	size_t nstore;            /* nodes from the store, planned or being planned */
	const scratch_list *kept; /* bases this operation already has */
} rebuild_graph;

static size_t graph_slot(const rebuild_graph *g, const char *oid)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (const char *p = oid; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	size_t i = (size_t)h & (GRAPH_SLOTS - 1);
	while (g->slot[i] && strcmp(g->v[g->slot[i] - 1].oid, oid) != 0)
		i = (i + 1) & (GRAPH_SLOTS - 1);
	return i;
}

static void graph_free(rebuild_graph *g)
{
	for (size_t i = 0; i < g->n; i++) {
		if (g->v[i].scratch)
			unlink(g->v[i].path);
		free(g->v[i].path);
		free(g->v[i].bases);
	}
	free(g->v);
	free(g->order);
	free(g);
}

/* Read what rebuilding node i from the store needs: its header, and for a
 * delta its checked manifest and, recursively, its bases. */
static int graph_add(tp_transfer *t, rebuild_graph *g, const char *oid, uint64_t size,
		     int depth, size_t *out);

static int graph_plan_store(tp_transfer *t, rebuild_graph *g, size_t i, int depth)
{
	char oid[TP_OID_HEXLEN + 1]; /* g->v moves as nodes are added */
	uint64_t size = g->v[i].size;
	memcpy(oid, g->v[i].oid, sizeof(oid));
	tp_store_manifest *m = NULL;
	char *text = NULL;
	if (depth > TP_TRANSFER_CHAIN_LIMIT)
		return tp_error_set(TP_ECORRUPT, "object %s: delta chain deeper than %d", oid,
				    TP_TRANSFER_CHAIN_LIMIT);
	if (g->nstore++ == TP_TRANSFER_REBUILDS_MAX)
		return tp_error_set(TP_ETOOBIG, "rebuilding %s needs more than %d objects from the "
				    "store", g->v[0].oid, TP_TRANSFER_REBUILDS_MAX);
	int rc = tp_store_object_manifest(t->store, oid, &g->v[i].info, &text);
	if (rc)
		return rc;
	tp_store_object_info info = g->v[i].info;
	if (info.size != size) {
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store is %llu bytes, expected %llu",
				  oid, (unsigned long long)info.size, (unsigned long long)size);
	} else if (info.kind == TP_STORE_KIND_WHOLE) {
		if (t->verify == TP_VERIFY_REQUIRED)
			rc = tp_error_set(TP_EAUTH, "object %s is stored whole (zstd) without a "
					  "manifest, so nothing signs it, and tenpak.verify is "
					  "required", oid);
	} else if ((rc = manifest_load(t, &m, text, oid, size)) == 0) {
		g->v[i].visiting = true;
		if (m->nbases && !(g->v[i].bases = calloc(m->nbases, sizeof(size_t))))
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		for (size_t k = 0; !rc && k < m->nbases; k++) {
			size_t b;
			if ((rc = graph_add(t, g, m->bases[k].oid, m->bases[k].size, depth + 1, &b)) != 0)
				break;
			g->v[i].bases[g->v[i].nbases++] = b;
			g->v[b].users++;
		}
		g->v[i].visiting = false;
	}
	tp_store_manifest_free(m);
	free(text);
	if (!rc)
		g->order[g->norder++] = i;
	return rc;
}

static int graph_add(tp_transfer *t, rebuild_graph *g, const char *oid, uint64_t size,
		     int depth, size_t *out)
{
	size_t s = graph_slot(g, oid);
	if (g->slot[s]) {
		const rebuild_node *n = &g->v[g->slot[s] - 1];
		if (n->size != size)
			return tp_error_set(TP_ECORRUPT, "object %s is named with two sizes, %llu and "
					    "%llu", oid, (unsigned long long)n->size,
					    (unsigned long long)size);
		if (n->visiting)
			return tp_error_set(TP_ECORRUPT, "object %s: its delta chain leads back to it",
					    oid);
		*out = g->slot[s] - 1;
		return 0;
	}
	if (g->n == GRAPH_NODES_MAX)
		return tp_error_set(TP_ETOOBIG, "rebuilding %s names more than %d objects",
				    g->v[0].oid, GRAPH_NODES_MAX);
	if (!(g->n % 64)) {
		rebuild_node *v = realloc(g->v, (g->n + 64) * sizeof(*v));
		if (!v)
			return tp_error_set(TP_ENOMEM, "out of memory");
		g->v = v;
	}
	size_t i = g->n++;
	rebuild_node *n = &g->v[i];
	memset(n, 0, sizeof(*n));
	memcpy(n->oid, oid, sizeof(n->oid));
	n->size = size;
	g->slot[s] = i + 1;
	*out = i;
	/* A base this operation holds, or a good local copy, needs nothing
	 * from the store; the object asked for is always rebuilt. */
	const char *kept = depth ? scratch_find(g->kept, oid) : NULL;
	if (kept)
		return (n->path = strdup(kept)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (depth && local_copy(t, oid, size, NULL, &n->path) == 0) {
		tp_trace("base %s: local copy %s", oid, n->path);
		return 0;
	}
	n->from_store = true;
	int rc = graph_plan_store(t, g, i, depth);
	return rc && depth ? tp_error_wrap(rc, "base %s", oid) : rc;
}

/* Refuse, before anything is written, a plan whose bases claim more bytes
 * than tenpak.rebuildfactor allows (a tiny object can claim gigabytes and
 * fail its hash only once written) or that needs more scratch space than
 * the tmp directory has free. */
static int graph_check(const tp_transfer *t, const rebuild_graph *g, size_t root)
{
	uint64_t claimed = 0, limit, live = 0, peak = 0;
	unsigned *users = calloc(g->n ? g->n : 1, sizeof(*users));
	char a[32], b[32];
	if (!users)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < g->n; i++)
		users[i] = g->v[i].users;
	/* Replay the rebuild: a file lives from its rebuild to its last reader. */
	for (size_t k = 0; k < g->norder; k++) {
		const rebuild_node *n = &g->v[g->order[k]];
		uint64_t payload = TP_STORE_KIND_HAS_MANIFEST(n->info.kind)
					   ? n->info.stored_size - n->info.payload_offset : 0;
		if (g->order[k] != root)
			claimed += n->size;
		if (live + n->size + payload > peak)
			peak = live + n->size + payload;
		live += n->size;
		for (size_t j = 0; j < n->nbases; j++)
			if (--users[n->bases[j]] == 0 && g->v[n->bases[j]].from_store)
				live -= g->v[n->bases[j]].size;
	}
	free(users);
	if (__builtin_mul_overflow((uint64_t)t->rebuild_factor, g->v[root].size, &limit) ||
	    __builtin_add_overflow(limit, TP_TRANSFER_REBUILD_SLACK, &limit))
		limit = UINT64_MAX;
	tp_trace("object %s: rebuilding %zu objects from the store, bases claim %llu bytes, "
		 "scratch peak %llu bytes", g->v[root].oid, g->norder, (unsigned long long)claimed,
		 (unsigned long long)peak);
	if (claimed > limit) {
		tp_fmt_bytes(claimed, a, sizeof(a));
		tp_fmt_bytes(g->v[root].size, b, sizeof(b));
		return tp_error_set(TP_ETOOBIG, "object %s (%s): its bases in the store claim %s, more "
				    "than tenpak.rebuildfactor (%u) times its size plus 64 MiB",
				    g->v[root].oid, b, a, t->rebuild_factor);
	}
	struct statvfs fs;
	if (statvfs(t->tmp_dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < peak) {
		tp_fmt_bytes(peak, a, sizeof(a));
		tp_fmt_bytes((uint64_t)fs.f_bavail * fs.f_frsize, b, sizeof(b));
		return tp_error_set(TP_ENOSPACE, "object %s: rebuilding it needs %s of scratch space "
				    "in %s, and only %s is free", g->v[root].oid, a, t->tmp_dir, b);
	}
	return 0;
}

/* Rebuild one node from the store into out, its bases already on disk. */
static int node_rebuild(tp_transfer *t, const rebuild_graph *g, const rebuild_node *n,
			const char *out, bool report)
{
	char **bases = NULL, *payload = NULL;
	int rc, fd;
	if (n->info.kind == TP_STORE_KIND_WHOLE) {
		/* The object layer stops at the object's size: a frame that
		 * inflates past it is an error before more is written. */
		if ((fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
			return tp_error_set_errno(TP_EIO, errno, "opening %s", out);
		rc = tp_store_object_get_fd(t->store, n->oid, n->size, fd,
					    report ? t->progress : NULL, t->progress_ctx);
		close(fd);
		return rc;
	}
	if (!(bases = calloc(n->nbases + 1, sizeof(*bases))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t j = 0; j < n->nbases; j++)
		bases[j] = g->v[n->bases[j]].path;
	if ((rc = scratch_new(t, "payload", &payload)) != 0)
		goto done;
	fd = open(payload, O_WRONLY | O_CLOEXEC);
	rc = fd < 0 ? tp_error_set_errno(TP_EIO, errno, "opening %s", payload)
		    : tp_store_object_get_payload(t->store, n->oid, &n->info, fd);
	if (fd >= 0)
		close(fd);
	if (!rc)
		rc = apply_payload(t, payload, bases, n->nbases, n->oid, n->size, out, report);
done:
	free(bases);
	scratch_drop(payload);
	return rc;
}

static int graph_run(tp_transfer *t, rebuild_graph *g, size_t root, const char *out, bool report)
{
	for (size_t k = 0; k < g->norder; k++) {
		size_t i = g->order[k];
		rebuild_node *n = &g->v[i];
		int rc = 0;
		if (i != root) {
			rc = scratch_new(t, "base", &n->path);
			n->scratch = rc == 0;
		}
		if (!rc)
			rc = node_rebuild(t, g, n, i == root ? out : n->path, report && i == root);
		if (rc)
			return i == root ? tp_error_wrap(rc, "rebuilding %s", n->oid)
					 : tp_error_wrap(rc, "rebuilding %s: base %s", g->v[root].oid,
							 n->oid);
		for (size_t j = 0; j < n->nbases; j++) {
			rebuild_node *b = &g->v[n->bases[j]];
			if (--b->users == 0 && b->scratch) {
				scratch_drop(b->path);
				b->path = NULL;
				b->scratch = false;
			}
		}
	}
	return 0;
}

/* Rebuild object oid from the store into out. kept (may be NULL): bases the
 * caller already holds. */
static int rebuild(tp_transfer *t, const scratch_list *kept, const char *oid, uint64_t size,
		   const char *out, bool report)
{
	rebuild_graph *g = calloc(1, sizeof(*g));
	size_t root = 0;
	int rc = g ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc && !(g->order = calloc(TP_TRANSFER_REBUILDS_MAX, sizeof(*g->order))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc) {
		g->kept = kept;
		rc = graph_add(t, g, oid, size, 0, &root);
	}
	if (!rc)
		rc = graph_check(t, g, root);
	if (!rc)
		rc = graph_run(t, g, root, out, report);
	if (g)
		graph_free(g);
	return rc;
}

/* Local bytes of a base: a verified local copy (hint, a file lineage found,
 * first), one this operation already rebuilt, else rebuilt from the store
 * into a scratch file kept in scratch. */
static int base_bytes(tp_transfer *t, const char *oid, uint64_t size, const char *hint,
		      scratch_list *scratch, char **path)
{
	const char *kept = scratch_find(scratch, oid);
	if (kept)
		return (*path = strdup(kept)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (local_copy(t, oid, size, hint, path) == 0) {
		tp_trace("base %s: local copy %s", oid, *path);
		return 0;
	}
	char *tmp = NULL;
	int rc = scratch_new(t, "base", &tmp);
	if (rc)
		return rc;
	tp_trace("base %s: rebuilding from the store", oid);
	if ((rc = rebuild(t, scratch, oid, size, tmp, false)) != 0) {
		scratch_drop(tmp);
		return tp_error_wrap(rc, "base %s", oid);
	}
	if ((rc = scratch_keep(scratch, oid, tmp)) != 0)
		return rc;
	*path = strdup(tmp);
	return *path ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path)
{
	tp_store_object_info info;
	int rc = rebuild(t, NULL, oid, size, path, true);
	/* The object itself absent (not one of its bases): name the store. */
	if (rc == TP_ENOTFOUND && tp_store_object_stat(t->store, oid, &info) == TP_ENOTFOUND)
		rc = tp_store_object_absent(t->store, oid);
	return rc;
}

/* ---- upload --------------------------------------------------------------- */

static bool is_safetensors(const char *path)
{
	tp_safetensors *st = NULL;
	bool ok = tp_safetensors_open(&st, path) == 0;
	tp_safetensors_free(st);
	return ok;
}

static int estimate(tp_transfer *t, const char *target, char **bases, size_t nbases,
		    uint64_t *size)
{
	tp_delta_manifest *m = NULL;
	tp_delta_opts o = codec_opts(t, false);
	int rc = tp_delta_estimate(&m, target, (const char *const *)bases, nbases, &o);
	if (!rc)
		*size = m->delta_size;
	tp_delta_manifest_free(m);
	return rc;
}

/* Make sure each base is in the store: a delta must never point at
 * nothing. A missing base is stored first, with its own lineage: when one
 * push carries several versions of a file, each becomes a delta of the one
 * before, whatever order git-lfs uploads them in. It gets one link less of
 * tenpak.maxchain, so the target's chain stays within it (and a cycle of
 * bases ends); the target's depth is then that of its deepest base + 1. */
static int store_bases(tp_transfer *t, plan *p)
{
	for (size_t i = 0; i < p->nbases; i++) {
		tp_store_object_info info;
		const base_ref *b = &p->bases[i];
		int rc = tp_store_object_stat(t->store, b->oid, &info);
		if (rc != 0 && rc != TP_ENOTFOUND)
			return rc;
		if (rc == TP_ENOTFOUND) {
			tp_trace("base %s is not in the store: storing it first", b->oid);
			tp_transfer_result r;
			tp_transfer tb = *t;
			tb.maxchain = t->maxchain > 0 ? t->maxchain - 1 : 0;
			if (tb.maxchain == 0)
				tb.repo = NULL; /* no lineage: store it whole */
			tb.progress = NULL;
			if ((rc = tp_transfer_upload(&tb, b->oid, b->size, b->path, &r)) != 0)
				return tp_error_wrap(rc, "storing base %s", b->oid);
		}
		int d = stored_depth(t, b->oid);
		if (d + 1 > p->depth)
			p->depth = d + 1;
	}
	return 0;
}

static bool plan_has_base(const plan *p, const char *oid)
{
	for (size_t i = 0; i < p->nbases; i++)
		if (strcmp(p->bases[i].oid, oid) == 0)
			return true;
	return false;
}

/* Gather the local bytes of a candidate's files; false when some are not
 * available on this machine or in the store. */
static int candidate_bases(tp_transfer *t, const tp_lineage_candidate *c, scratch_list *scratch,
			   plan *p)
{
	int rc = 0;
	if (!(p->bases = calloc(c->nfiles, sizeof(*p->bases))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < c->nfiles && !rc; i++) {
		const tp_lineage_file *f = &c->files[i];
		base_ref *b = &p->bases[p->nbases];
		/* Two shards with the same bytes are one base: readers refuse a
		 * manifest that names an oid twice. */
		if (plan_has_base(p, f->oid))
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
			rc = base_bytes(t, f->oid, b->size, f->local, scratch, &b->path);
		if (!rc && (!b->path || !b->label))
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		p->nbases++;
		if (!rc) {
			int d = stored_depth(t, f->oid);
			if (d + 1 > p->depth)
				p->depth = d + 1;
		}
	}
	return rc;
}

static char **plan_paths(const plan *p)
{
	char **v = calloc(p->nbases + 1, sizeof(*v));
	for (size_t i = 0; v && i < p->nbases; i++)
		v[i] = p->bases[i].path;
	return v;
}

/* Pick the candidate with the smallest estimated delta, if it beats the
 * whole file; best->nbases == 0 means store whole. */
static int choose(tp_transfer *t, const char *path, const tp_lineage *l, scratch_list *scratch,
		  plan *best, uint64_t *whole_est)
{
	tp_buf_init(&best->reason, 4096);
	if (!l || l->ncandidates == 0) {
		/* Nothing to compare with: no need to estimate the whole file. */
		*whole_est = UINT64_MAX;
		return tp_buf_adds(&best->reason, "whole: no base candidate");
	}
	int rc = estimate(t, path, NULL, 0, whole_est);
	if (rc)
		return rc;
	uint64_t best_est = *whole_est;
	tp_buf_addf_cut(&best->reason, "whole: estimated %llu bytes", (unsigned long long)best_est);
	for (size_t i = 0; l && i < l->ncandidates && i < TP_TRANSFER_CANDIDATES_MAX; i++) {
		const tp_lineage_candidate *c = &l->candidates[i];
		plan p = { .source = tp_lineage_source_name(c->source), .evidence = c->evidence };
		uint64_t est = 0;
		if ((rc = candidate_bases(t, c, scratch, &p)) != 0) {
			tp_trace("candidate %s: %s", c->evidence, tp_error_last());
			tp_buf_addf_cut(&best->reason, "; %s: unavailable", c->files[0].oid);
			plan_clear(&p);
			continue;
		}
		if (p.depth > t->maxchain) {
			tp_buf_addf_cut(&best->reason, "; %.12s: chain depth %d over tenpak.maxchain %d",
					c->files[0].oid, p.depth, t->maxchain);
			plan_clear(&p);
			continue;
		}
		char **paths = plan_paths(&p);
		rc = paths ? estimate(t, path, paths, p.nbases, &est) : TP_ENOMEM;
		free(paths);
		if (rc) {
			plan_clear(&p);
			return rc;
		}
		tp_buf_addf_cut(&best->reason, "; %s %.12s: estimated %llu bytes", p.source,
				c->files[0].oid, (unsigned long long)est);
		if (est < best_est && tp_transfer_delta_wins(est, *whole_est)) {
			best_est = est;
			tp_buf reason = best->reason;
			best->reason = (tp_buf)TP_BUF_INIT(0);
			plan_clear(best);
			*best = p;
			best->reason = reason;
		} else {
			plan_clear(&p);
		}
	}
	return 0;
}

/* Compress target against the plan's bases into a scratch file, then
 * rebuild it once: nothing unproven reaches the store. */
static int encode(tp_transfer *t, const char *oid, const char *target, const plan *p, bool report,
		  char **payload, uint64_t *payload_size)
{
	char **paths = plan_paths(p);
	tp_delta_stats stats = { 0 };
	int rc = paths ? scratch_new(t, "delta", payload) : tp_error_set(TP_ENOMEM, "out of memory");
	if (rc)
		goto done;
	tp_delta_opts o = codec_opts(t, report);
	int fd = open(*payload, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "opening %s", *payload);
		goto done;
	}
	/* A scratch file needs no fsync: the store makes its copy durable. */
	rc = tp_delta_compress(target, (const char *const *)paths, p->nbases, tp_delta_fd_write, &fd,
			       &o, &stats);
	close(fd);
	if (!rc)
		rc = apply_payload(t, *payload, paths, p->nbases, oid, stats.target_bytes, NULL,
				   false);
	if (rc)
		tp_error_wrap(rc, "the delta of %s did not rebuild it; not storing it", target);
	*payload_size = stats.delta_bytes;
done:
	free(paths);
	if (rc) {
		scratch_drop(*payload);
		*payload = NULL;
	}
	return rc;
}

static int store_encoded(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			 plan *p, uint64_t whole_est, tp_transfer_result *result)
{
	char *payload = NULL, *mtext = NULL;
	uint64_t payload_size = 0;
	int rc = store_bases(t, p);
	if (!rc)
		rc = encode(t, oid, path, p, true, &payload, &payload_size);
	/* Estimates can be wrong: a delta that lost to the whole estimate is
	 * compared with the real whole object, and the smaller one is kept. */
	if (!rc && p->nbases && !tp_transfer_delta_wins(payload_size, whole_est)) {
		plan whole = { .source = p->source, .evidence = p->evidence };
		char *wpayload = NULL;
		uint64_t wsize = 0;
		tp_buf_init(&whole.reason, 4096);
		rc = encode(t, oid, path, &whole, false, &wpayload, &wsize);
		if (!rc && wsize <= payload_size) {
			tp_buf_addf_cut(&whole.reason, "%s; delta was %llu bytes, whole %llu: whole",
					p->reason.ptr ? p->reason.ptr : "", (unsigned long long)payload_size,
					(unsigned long long)wsize);
			scratch_drop(payload);
			payload = wpayload;
			payload_size = wsize;
			plan_clear(p);
			*p = whole;
		} else {
			scratch_drop(wpayload);
			plan_clear(&whole);
		}
	}
	if (!rc)
		rc = manifest_text(t, oid, size, p, &mtext);
	if (!rc)
		rc = tp_store_object_put_delta(t->store, oid, size,
					       p->nbases ? TP_STORE_KIND_DELTA : TP_STORE_KIND_CODEC,
					       mtext, payload, NULL, NULL);
	if (!rc && result) {
		result->kind = p->nbases ? TP_STORE_KIND_DELTA : TP_STORE_KIND_CODEC;
		result->stored = payload_size;
		result->nbases = (int)p->nbases;
	}
	scratch_drop(payload);
	free(mtext);
	return rc;
}

/* The file git-lfs hands us must have the size it announced: a wrong size
 * would be recorded in the object's header and manifest. */
static int check_size(const char *oid, uint64_t size, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "object %s: %s", oid,
					  path);
	if (!S_ISREG(st.st_mode))
		return tp_error_set(TP_EINVAL, "object %s: %s is not a regular file", oid, path);
	if ((uint64_t)st.st_size != size)
		return tp_error_set(TP_ECORRUPT, "object %s: %s is %llu bytes, but its size should be "
				    "%llu; refusing to store it", oid, path,
				    (unsigned long long)st.st_size, (unsigned long long)size);
	return 0;
}

int tp_transfer_upload(tp_transfer *t, const char *oid, uint64_t size, const char *path,
		       tp_transfer_result *result)
{
	tp_store_object_info info;
	tp_transfer_result r = { 0 };
	int rc = check_size(oid, size, path);
	if (rc)
		return rc;
	rc = tp_store_object_stat(t->store, oid, &info);
	if (rc == 0 && info.size == size) {
		r.skipped = true;
		r.kind = info.kind;
		goto done;
	}
	if (rc && rc != TP_ENOTFOUND)
		tp_log(TP_LOG_WARN, "%s: replacing unreadable stored copy: %s", oid, tp_error_last());
	/* Other files are stored whole by zstd, unless manifests are signed:
	 * then the codec stores them too, so that a signature covers them. */
	bool model = is_safetensors(path);
	if (!model && !t->signer) {
		rc = tp_store_object_put_file(t->store, oid, size, path, t->progress, t->progress_ctx);
		r.kind = TP_STORE_KIND_WHOLE;
		if (!rc && tp_store_object_stat(t->store, oid, &info) == 0)
			r.stored = info.stored_size;
		goto done;
	}
	tp_lineage *l = NULL;
	if (model && t->repo && (rc = tp_lineage_find(&l, t->repo, oid)) != 0 && rc != TP_ENOTFOUND)
		goto done;
	scratch_list scratch = { 0 };
	plan best = { 0 };
	uint64_t whole_est = 0;
	rc = choose(t, path, l, &scratch, &best, &whole_est);
	if (!rc) {
		tp_trace("%s: %s", oid, best.reason.ptr ? best.reason.ptr : "");
		rc = store_encoded(t, oid, size, path, &best, whole_est, &r);
	}
	plan_clear(&best);
	scratch_clear(&scratch);
	tp_lineage_free(l);
done:
	if (!rc && result)
		*result = r;
	return rc;
}
