/*
 * Upload: execute the plan (plan.c). Its bases are stored first, the delta
 * is encoded and proven in one pass (encode), and the object is stored with a
 * manifest that names its bases by oid, signed when tenpak.signingkey says.
 */
#include "transfer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Plans tried per upload when local copies chosen as bases prove wrong. */
#define UPLOAD_TRIES_MAX 8
/* A delta stream's preamble through its version (delta/FORMAT.md). */
#define PREAMBLE_VERSION_END 12

static int manifest_text(const tp_transfer *t, const char *oid, uint64_t size,
			 const tp_transfer_choice *p, uint32_t codec_version, char **text)
{
	tp_store_manifest m = { .size = size, .codec_version = (int)codec_version, .depth = p->depth,
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
	int rc = tp_provenance_manifest_sign(t->provenance, &m, signer, sig);
	if (!rc)
		rc = tp_store_manifest_build(&m, text);
	free(m.bases);
	return rc;
}

static bool is_safetensors(const char *path)
{
	tp_safetensors *st = NULL;
	bool ok = tp_safetensors_open(&st, path) == 0;
	tp_safetensors_free(st);
	return ok;
}

/* Make sure each base is in the store: a delta must never point at
 * nothing. A missing base is stored first, with its own lineage: when one
 * push carries several versions of a file, each becomes a delta of the one
 * before, whatever order git-lfs uploads them in. It gets one link less of
 * tenpak.maxchain, so the target's chain stays within it (and a cycle of
 * bases ends); the target's depth is then that of its deepest base + 1. */
static int store_bases(tp_transfer *t, tp_transfer_choice *p, bool *rejected)
{
	for (size_t i = 0; i < p->nbases; i++) {
		tp_store_object_info info;
		tp_transfer_base *b = &p->bases[i];
		int rc = tp_store_object_stat(t->store, b->oid, &info);
		if (rc != 0 && rc != TP_ENOTFOUND)
			return rc;
		/* A copy not hashed yet is checked before it is stored as the
		 * oid: a wrong one is not used (a new plan does without it). */
		if (rc == TP_ENOTFOUND && b->unverified) {
			if (tp_transfer_local_verify(t, b->path, b->oid, b->size) != 0) {
				*rejected = true;
				return tp_error_set(TP_ECORRUPT, "base %s (%s) is corrupt; not using it",
						    b->oid, b->path);
			}
			b->unverified = false;
		}
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
		int d = tp_transfer_stored_depth(t, b->oid);
		if (d + 1 > p->depth)
			p->depth = d + 1;
	}
	return 0;
}

/* Before the pass: a base whose verdict is known must still be in the
 * state it had when it hashed to its oid; one not hashed yet (unverified)
 * has its state taken, and *hash says the pass must hash it. An index
 * file's shards are many files: such a base is hashed now. */
static int bases_before(tp_transfer *t, tp_transfer_choice *p, struct stat *st, bool *hash,
			bool *rejected)
{
	*hash = false;
	for (size_t i = 0; i < p->nbases; i++) {
		tp_transfer_base *b = &p->bases[i];
		if (b->unverified && tp_safetensors_is_index(b->path)) {
			if (tp_transfer_local_verify(t, b->path, b->oid, b->size) != 0) {
				*rejected = true;
				return tp_error_set(TP_ECORRUPT, "base %s (%s) is corrupt; not using it",
						    b->oid, b->path);
			}
			b->unverified = false;
		}
		int rc = 0;
		if (!b->unverified)
			rc = tp_transfer_local_unchanged(t, b->path, b->oid);
		else if (stat(b->path, &st[i]) != 0)
			rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "base %s: %s", b->oid,
						b->path);
		else
			*hash = true;
		if (rc)
			return rc;
	}
	return 0;
}

/* After the pass: bases are still the bytes that hashed to their oids,
 * either before (a verdict known) or in the pass itself (sums). A base
 * that hashed to something else is remembered as such and rejected. */
static int bases_after(tp_transfer *t, tp_transfer_choice *p, const struct stat *st,
		       const unsigned char (*sums)[32], bool *rejected)
{
	char hex[TP_OID_HEXLEN + 1];
	for (size_t i = 0; i < p->nbases; i++) {
		tp_transfer_base *b = &p->bases[i];
		struct stat now;
		if (!b->unverified) {
			int rc = tp_transfer_local_unchanged(t, b->path, b->oid);
			if (rc)
				return rc;
			continue;
		}
		if (stat(b->path, &now) != 0 || !tp_transfer_local_same(&st[i], &now))
			return tp_error_set(TP_ECORRUPT, "base %s (%s) changed while the delta was made",
					    b->oid, b->path);
		tp_sha256_hex(sums[i], hex);
		tp_transfer_local_record(t, b->path, &st[i], hex);
		if (strcmp(hex, b->oid) != 0) {
			tp_log(TP_LOG_WARN, "not using %s for object %s: its bytes hash to %s (changed "
			       "or corrupt)", b->path, b->oid, hex);
			*rejected = true;
			return tp_error_set(TP_ECORRUPT, "base %s (%s) changed while the delta was made, "
					    "or is corrupt: its bytes hash to %s", b->oid, b->path, hex);
		}
		b->unverified = false;
	}
	return 0;
}

/* Where encode writes the stream: a scratch file (fd), or straight into
 * the store (feed), started once the stream's preamble shows its format
 * version, which the manifest before it records. */
typedef struct sink {
	tp_transfer *t;
	const char *oid;
	uint64_t size;
	const tp_transfer_choice *p;
	int fd; /* a scratch file, or -1: feed the store */
	unsigned char pre[PREAMBLE_VERSION_END];
	size_t npre;
	uint32_t version; /* the preamble's, which the manifest records */
	tp_transfer_feed *feed;
} sink;

static int sink_start(sink *k)
{
	char *mtext = NULL;
	/* delta/FORMAT.md: magic "TPKDELTA", then the u32 (LE) version. */
	if (memcmp(k->pre, "TPKDELTA", 8) != 0)
		return tp_error_set(TP_ECORRUPT, "the codec's stream does not start as a delta");
	k->version = (uint32_t)k->pre[8] | (uint32_t)k->pre[9] << 8 |
		     (uint32_t)k->pre[10] << 16 | (uint32_t)k->pre[11] << 24;
	int rc = manifest_text(k->t, k->oid, k->size, k->p, k->version, &mtext);
	if (!rc)
		rc = tp_transfer_feed_start(&k->feed, k->t->store, k->oid, k->size,
					    k->p->nbases ? TP_STORE_KIND_DELTA
							 : TP_STORE_KIND_WHOLE_CODEC,
					    mtext);
	else
		free(mtext);
	return rc ? rc : tp_transfer_feed_write(k->feed, k->pre, k->npre);
}

static int sink_write(void *ctx, const void *buf, size_t n)
{
	sink *k = ctx;
	const unsigned char *b = buf;
	if (k->fd >= 0)
		return tp_fs_write_all(k->fd, buf, n);
	if (!k->feed) {
		size_t take = sizeof(k->pre) - k->npre < n ? sizeof(k->pre) - k->npre : n;
		memcpy(k->pre + k->npre, b, take);
		k->npre += take;
		b += take;
		n -= take;
		if (k->npre < sizeof(k->pre))
			return 0;
		int rc = sink_start(k);
		if (rc)
			return rc;
	}
	return n ? tp_transfer_feed_write(k->feed, b, n) : 0;
}

/*
 * Compress target against the choice's bases, proving in the same pass
 * that the stream rebuilds object oid, so that nothing unproven reaches the
 * store and no byte is read twice. With feed, the stream goes into the
 * store as it is made and *feed is left pending: the caller ends it, and
 * only then, proven, is the object stored; else into a scratch file,
 * *payload.
 * - the codec hashes every target byte it encodes; that sha256 must be the
 *   oid (and the size the object's), so the bytes coded are the object's;
 * - each frame is decoded right after it is encoded, as apply will decode
 *   it (the plan read back from what was written, each base found by its
 *   recorded size and fingerprint), and must give back the target chunk:
 *   so the stream rebuilds those bytes from the bases' bytes it read;
 * - each base was hashed to its oid (a local copy) or rebuilt and proved
 *   (a scratch file) earlier in this process, or is hashed by this pass as
 *   it is read (a local copy not checked yet), and its identity, size and
 *   times are unchanged after the pass: the bytes read were the oid's, and a
 *   download rebuilds from bytes that hash to the same oid.
 */
static int encode(tp_transfer *t, const char *oid, uint64_t size, const char *target,
		  tp_transfer_choice *p, bool report, tp_transfer_feed **feed, char **payload,
		  uint64_t *payload_size, uint32_t *version, bool *rejected)
{
	char **paths = tp_transfer_choice_paths(p);
	struct stat *st = calloc(p->nbases + 1, sizeof(*st));
	unsigned char (*sums)[32] = calloc(p->nbases + 1, sizeof(*sums));
	tp_delta_stats stats = { 0 };
	char hex[TP_OID_HEXLEN + 1];
	bool hash = false;
	sink k = { .t = t, .oid = oid, .size = size, .p = p, .fd = -1 };
	int rc = paths && st && sums ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc && !feed)
		rc = tp_transfer_scratch_new(t, "delta", payload);
	if (rc)
		goto done;
	tp_delta_opts o = tp_transfer_codec_opts(t, report);
	o.verify = true;
	o.plan = p->layout; /* planned by its estimate: not again */
	/* A scratch file needs no fsync: the store makes its copy durable. */
	if (!feed && (k.fd = open(*payload, O_WRONLY | O_TRUNC | O_CLOEXEC)) < 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "opening %s", *payload);
		goto done;
	}
	rc = bases_before(t, p, st, &hash, rejected);
	if (hash)
		o.base_sha256 = sums;
	if (!rc)
		rc = tp_delta_compress(target, (const char *const *)paths, p->nbases, sink_write,
				       &k, &o, &stats);
	if (k.fd >= 0)
		close(k.fd);
	if (!rc && feed && (!k.feed || k.version != stats.version))
		rc = tp_error_set(TP_ECORRUPT, "the codec's stream of %s does not start with its "
				  "format version", target);
	if (!rc)
		rc = bases_after(t, p, st, (const unsigned char (*)[32])sums, rejected);
	if (!rc) {
		tp_sha256_hex(stats.sha256, hex);
		if (strcmp(hex, oid) != 0 || stats.target_bytes != size)
			rc = tp_error_set(TP_ECORRUPT, "%s hashed to %s (%llu bytes) while it was "
					  "coded, not to its oid", target, hex,
					  (unsigned long long)stats.target_bytes);
	}
	if (rc)
		tp_error_wrap(rc, "the delta of %s did not rebuild it; not storing it", target);
	*payload_size = stats.delta_bytes;
	*version = stats.version; /* the stream's format version, for the manifest */
done:
	free(paths);
	free(st);
	free(sums);
	if (rc) {
		tp_transfer_feed_finish(k.feed, false);
		if (!feed) {
			tp_transfer_scratch_drop(*payload);
			*payload = NULL;
		}
	} else if (feed) {
		*feed = k.feed;
	}
	return rc;
}

static int store_encoded(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			 tp_transfer_choice *p, uint64_t whole_est, tp_transfer_result *result,
			 bool *rejected)
{
	char *wpayload = NULL, *mtext = NULL;
	tp_transfer_feed *feed = NULL;
	uint64_t payload_size = 0;
	uint32_t version = TP_DELTA_VERSION;
	int rc = store_bases(t, p, rejected);
	if (!rc)
		rc = encode(t, oid, size, path, p, true, &feed, NULL, &payload_size, &version,
			    rejected);
	/* Estimates can be wrong: a delta that lost to the whole estimate is
	 * compared with the real whole object, and the smaller one is kept
	 * (the delta, still pending in the store, is dropped or stored). */
	if (!rc && p->nbases && !tp_transfer_delta_wins(payload_size, whole_est)) {
		tp_transfer_choice whole = { .source = p->source, .evidence = p->evidence };
		uint64_t wsize = 0;
		uint32_t wversion = TP_DELTA_VERSION;
		tp_buf_init(&whole.reason, 4096);
		rc = encode(t, oid, size, path, &whole, false, NULL, &wpayload, &wsize, &wversion,
			    rejected);
		if (!rc && wsize <= payload_size) {
			tp_buf_addf_cut(&whole.reason, "%s; delta was %llu bytes, whole %llu: whole",
					p->reason.ptr ? p->reason.ptr : "", (unsigned long long)payload_size,
					(unsigned long long)wsize);
			payload_size = wsize;
			tp_transfer_choice_clear(p);
			*p = whole;
			tp_transfer_feed_finish(feed, false);
			feed = NULL;
			rc = manifest_text(t, oid, size, p, wversion, &mtext);
			if (!rc)
				rc = tp_store_object_put_delta(t->store, oid, size,
							       TP_STORE_KIND_WHOLE_CODEC, mtext,
							       wpayload, NULL, NULL);
		} else {
			tp_transfer_choice_clear(&whole);
		}
	}
	/* The streamed object is stored now that it is proven, and only then. */
	int frc = tp_transfer_feed_finish(feed, rc == 0);
	if (!rc)
		rc = frc;
	if (!rc && result) {
		result->kind = p->nbases ? TP_STORE_KIND_DELTA : TP_STORE_KIND_WHOLE_CODEC;
		result->stored = payload_size;
		result->nbases = (int)p->nbases;
	}
	tp_transfer_scratch_drop(wpayload);
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

int tp_transfer_plan_execute(tp_transfer *t, tp_transfer_plan *plan, const char *oid,
			     uint64_t size, const char *path, tp_transfer_result *result)
{
	tp_transfer_planned *pl = (tp_transfer_planned *)plan;
	tp_transfer_result r = { 0 };
	int rc = check_size(oid, size, path);
	if (rc)
		return rc;
	tp_trace("%s: %s", oid, plan->reason);
	pl->base_rejected = false;
	rc = store_encoded(t, oid, size, path, &pl->chosen, plan->whole, &r, &pl->base_rejected);
	if (!rc && result)
		*result = r;
	return rc;
}

/* A local copy chosen as a base is hashed while the delta is made; one
 * that proves wrong stores nothing and is remembered as wrong, so the next
 * plan does without it (another copy, the store, or whole). Each try rules
 * out at least one file; the cap only bounds a pathological number of bad
 * copies. */
static int upload_planned(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			  const tp_lineage *l, tp_transfer_result *r)
{
	bool defer = t->defer_base_hash;
	int rc;
	t->defer_base_hash = true;
	for (int tries = 0;; tries++) {
		tp_transfer_plan *plan = NULL;
		rc = tp_transfer_plan_upload(t, path, l, &plan);
		if (!rc)
			rc = tp_transfer_plan_execute(t, plan, oid, size, path, r);
		bool again = rc == TP_ECORRUPT && plan &&
			     ((tp_transfer_planned *)plan)->base_rejected && tries < UPLOAD_TRIES_MAX;
		tp_transfer_plan_free(plan);
		if (!again)
			break;
		tp_trace("%s: planning again without the rejected base", oid);
	}
	t->defer_base_hash = defer;
	return rc;
}

int tp_transfer_upload_lineage(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			       const tp_lineage *lineage, tp_transfer_result *result)
{
	tp_transfer_result r = { 0 };
	int rc = check_size(oid, size, path);
	if (!rc)
		rc = upload_planned(t, oid, size, path, lineage, &r);
	if (!rc && result)
		*result = r;
	return rc;
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
	if (!model && !tp_provenance_signs(t->provenance)) {
		rc = tp_store_object_put_file(t->store, oid, size, path, t->progress, t->progress_ctx);
		r.kind = TP_STORE_KIND_WHOLE_ZSTD;
		if (!rc && tp_store_object_stat(t->store, oid, &info) == 0)
			r.stored = info.stored_size;
		goto done;
	}
	tp_lineage *l = NULL;
	if (model && t->repo && (rc = tp_lineage_find(&l, t->repo, oid)) != 0 && rc != TP_ENOTFOUND)
		goto done;
	rc = upload_planned(t, oid, size, path, l, &r);
	tp_lineage_free(l);
done:
	if (!rc && result)
		*result = r;
	return rc;
}
