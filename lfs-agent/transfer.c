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

/* Files this operation created, removed when it ends. */
typedef struct scratch_list {
	char **paths;
	size_t n;
} scratch_list;

static int scratch_keep(scratch_list *l, char *path)
{
	char **p = realloc(l->paths, (l->n + 1) * sizeof(*p));
	if (!p) {
		scratch_drop(path);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	l->paths = p;
	p[l->n++] = path;
	return 0;
}

static void scratch_clear(scratch_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		scratch_drop(l->paths[i]);
	free(l->paths);
	l->paths = NULL;
	l->n = 0;
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

static int provenance_config(tp_transfer *t, tp_lineage_repo *repo)
{
	char *v = NULL, *path = NULL;
	int rc = 0;
	t->verify = TP_VERIFY_IF_SIGNED;
	if (tp_lineage_config_get(repo, "tenpak.verify", &v) == 0) {
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
	if (!rc && tp_lineage_config_get(repo, "tenpak.trustedkeys", &v) == 0) {
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
	if (!rc && tp_lineage_config_get(repo, "tenpak.signingkey", &v) == 0) {
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

int tp_transfer_init(tp_transfer *t, tp_store *store, tp_lineage_repo *repo, const char *tmp_dir)
{
	memset(t, 0, sizeof(*t));
	t->store = store;
	t->repo = repo;
	t->maxchain = TP_TRANSFER_MAXCHAIN_DEFAULT;
	/* Every agent may use every core: a push of one big model, the common
	 * case, then runs at full speed, and several objects at once cost only
	 * some oversubscription. */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	t->threads = cores > 0 ? (unsigned)cores : 1;
	char *v = NULL;
	if (tp_lineage_config_get(repo, "tenpak.maxchain", &v) == 0) {
		char *end;
		long n = strtol(v, &end, 10);
		bool bad = end == v || *end || n < 0 || n > TP_TRANSFER_CHAIN_LIMIT;
		free(v);
		if (bad)
			return tp_error_set(TP_ECONFIG, "tenpak.maxchain must be a number from 0 to %d",
					    TP_TRANSFER_CHAIN_LIMIT);
		t->maxchain = (int)n;
	}
	if (!(t->tmp_dir = strdup(tmp_dir)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc = provenance_config(t, repo);
	return rc ? rc : tp_fs_mkdirs(t->tmp_dir);
}

void tp_transfer_clear(tp_transfer *t)
{
	free(t->tmp_dir);
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

static int rebuild(tp_transfer *t, const char *oid, uint64_t size, const char *path, int depth,
		   bool report);

/* Local bytes of a base: this repository, the HF cache, else rebuilt from
 * the store into a scratch file kept in scratch. */
static int base_bytes(tp_transfer *t, const char *oid, uint64_t size, int depth,
		      scratch_list *scratch, char **path)
{
	if (tp_lineage_find_local(t->repo, oid, size, path) == 0) {
		tp_trace("base %s: local copy %s", oid, *path);
		return 0;
	}
	char *tmp = NULL;
	int rc = scratch_new(t, "base", &tmp);
	if (rc)
		return rc;
	tp_trace("base %s: rebuilding from the store", oid);
	if ((rc = rebuild(t, oid, size, tmp, depth + 1, false)) != 0) {
		scratch_drop(tmp);
		return tp_error_wrap(rc, "base %s", oid);
	}
	if ((rc = scratch_keep(scratch, tmp)) != 0)
		return rc;
	*path = strdup(tmp);
	return *path ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

/* Where a rebuild goes only to be checked. */
#define CHECK_ONLY "/dev/null"

/* Apply a delta payload into out and prove the result is object oid: the
 * codec hashes what it writes, and that hash must be the oid. A delta that
 * claims another size than expect is refused before anything is written (a
 * hostile one could claim terabytes of "same as base" chunks and fill the
 * disk). out may be CHECK_ONLY. */
static int apply_payload(tp_transfer *t, const char *payload, char **bases, size_t nbases,
			 const char *oid, uint64_t expect, const char *out, bool report)
{
	int in = open(payload, O_RDONLY | O_CLOEXEC);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	tp_delta_stats stats;
	char hex[TP_OID_HEXLEN + 1];
	int rc = 0;
	if (in < 0 || fd < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "opening scratch files");
		goto done;
	}
	tp_delta_opts o = codec_opts(t, report);
	o.expect_size = expect;
	rc = tp_delta_apply(tp_delta_fd_read, &in, (const char *const *)bases, nbases, fd, &o, &stats);
	if (rc)
		goto done;
	tp_sha256_hex(stats.sha256, hex);
	if (strcmp(hex, oid) != 0) {
		rc = tp_error_set(TP_ECORRUPT, "object %s rebuilt with sha256 %s: the stored object "
				  "or a base is corrupt", oid, hex);
		goto done;
	}
	if (strcmp(out, CHECK_ONLY) != 0 && fsync(fd) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", out);
done:
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	return rc;
}

static int rebuild_delta(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			 const tp_store_object_info *info, const char *text, int depth, bool report)
{
	tp_store_manifest *m = NULL;
	scratch_list scratch = { 0 };
	char **bases = NULL, *payload = NULL;
	size_t nb = 0;
	int rc = manifest_load(t, &m, text, oid, size);
	if (rc)
		goto done;
	if (!(bases = calloc(m->nbases + 1, sizeof(*bases)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (; nb < m->nbases; nb++) {
		const tp_store_manifest_base *b = &m->bases[nb];
		if ((rc = base_bytes(t, b->oid, b->size, depth, &scratch, &bases[nb])) != 0)
			goto done;
	}
	if ((rc = scratch_new(t, "payload", &payload)) != 0)
		goto done;
	int fd = open(payload, O_WRONLY | O_CLOEXEC);
	rc = fd < 0 ? tp_error_set_errno(TP_EIO, errno, "opening %s", payload)
		    : tp_store_object_get_payload(t->store, oid, info, fd);
	if (fd >= 0)
		close(fd);
	if (!rc)
		rc = apply_payload(t, payload, bases, nb, oid, size, path, report);
	if (rc)
		tp_error_wrap(rc, "rebuilding %s", oid);
done:
	for (size_t i = 0; i < nb; i++)
		free(bases[i]);
	free(bases);
	scratch_drop(payload);
	scratch_clear(&scratch);
	tp_store_manifest_free(m);
	return rc;
}

static int rebuild(tp_transfer *t, const char *oid, uint64_t size, const char *path, int depth,
		   bool report)
{
	tp_store_object_info info;
	char *text = NULL;
	if (depth > TP_TRANSFER_CHAIN_LIMIT)
		return tp_error_set(TP_ECORRUPT, "object %s: delta chain deeper than %d (a cycle?)",
				    oid, TP_TRANSFER_CHAIN_LIMIT);
	int rc = tp_store_object_manifest(t->store, oid, &info, &text);
	if (rc)
		return rc;
	if (info.size != size) {
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store is %llu bytes, expected %llu",
				  oid, (unsigned long long)info.size, (unsigned long long)size);
	} else if (info.kind == TP_STORE_KIND_WHOLE) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			return tp_error_set_errno(TP_EIO, errno, "opening %s", path);
		rc = tp_store_object_get_fd(t->store, oid, size, fd, report ? t->progress : NULL,
					    t->progress_ctx);
		close(fd);
	} else {
		rc = rebuild_delta(t, oid, size, path, &info, text, depth, report);
	}
	free(text);
	return rc;
}

int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path)
{
	return rebuild(t, oid, size, path, 0, true);
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
		tp_store_object_info info;
		memcpy(b->oid, f->oid, sizeof(b->oid));
		b->size = f->size;
		b->label = strdup(f->path);
		/* An oid: base that the repository does not know: the store's size. */
		if (f->size == TP_LINEAGE_SIZE_UNKNOWN &&
		    (rc = tp_store_object_stat(t->store, f->oid, &info)) == 0)
			b->size = info.size;
		if (!rc && f->local)
			b->path = strdup(f->local);
		else if (!rc)
			rc = base_bytes(t, f->oid, b->size, 0, scratch, &b->path);
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
		rc = apply_payload(t, *payload, paths, p->nbases, oid, stats.target_bytes, CHECK_ONLY,
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

int tp_transfer_upload(tp_transfer *t, const char *oid, uint64_t size, const char *path,
		       tp_transfer_result *result)
{
	tp_store_object_info info;
	tp_transfer_result r = { 0 };
	int rc = tp_store_object_stat(t->store, oid, &info);
	if (rc == 0 && info.size == size) {
		r.skipped = true;
		r.kind = info.kind;
		goto done;
	}
	if (rc && rc != TP_ENOTFOUND)
		tp_log(TP_LOG_WARN, "%s: replacing unreadable stored copy: %s", oid, tp_error_last());
	if (!is_safetensors(path)) {
		rc = tp_store_object_put_file(t->store, oid, size, path, t->progress, t->progress_ctx);
		r.kind = TP_STORE_KIND_WHOLE;
		goto done;
	}
	tp_lineage *l = NULL;
	if (t->repo && (rc = tp_lineage_find(&l, t->repo, oid)) != 0 && rc != TP_ENOTFOUND)
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
