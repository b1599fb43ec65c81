/*
 * Rebuilds: an object from the store into a file, its bases first, each
 * checked against its oid. Downloads and fsck rebuild the object asked for;
 * uploads rebuild the bases this machine lacks.
 */
#define _GNU_SOURCE /* pipe2 */
#include "transfer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

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
		rc = tp_provenance_manifest_check(t->provenance, *out, oid);
	if (rc) {
		tp_store_manifest_free(*out);
		*out = NULL;
	}
	return rc;
}

/* Open out for writing from its start. Files made by mkstemp are empty:
 * truncating one anyway would make ext4 flush it to disk when it is closed
 * (its guard for files rewritten in place), and a base's scratch file is
 * removed right after, so only a file with bytes in it is truncated. */
static int open_empty(const char *out, int *fd)
{
	struct stat st;
	*fd = open(out, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (*fd < 0 || fstat(*fd, &st) != 0 || (st.st_size > 0 && ftruncate(*fd, 0) != 0)) {
		int rc = tp_error_set_errno(TP_EIO, errno, "opening %s", out);
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return rc;
	}
	return 0;
}

int tp_transfer_apply(tp_transfer *t, int in, char **bases, size_t nbases, const char *oid,
		      uint64_t expect, const char *out, bool durable, bool report)
{
	int fd = -1;
	tp_delta_stats stats;
	char hex[TP_OID_HEXLEN + 1];
	int rc = out ? open_empty(out, &fd) : 0;
	if (rc)
		goto done;
	tp_delta_opts o = tp_transfer_codec_opts(t, report);
	o.expect_size = expect;
	/* The codec hashes what it writes as it writes it: the output is never
	 * read back. */
	tp_delta_durable w = { .fd = fd, .size = expect };
	tp_delta_write_fn write = !out ? NULL : durable ? tp_delta_durable_write : tp_delta_fd_write;
	rc = tp_delta_apply_to(tp_delta_fd_read, &in, (const char *const *)bases, nbases, write,
			       durable ? (void *)&w : (void *)&fd, &o, &stats);
	if (rc)
		goto done;
	tp_sha256_hex(stats.sha256, hex);
	if (strcmp(hex, oid) != 0) {
		rc = tp_error_set(TP_ECORRUPT, "object %s rebuilt with sha256 %s: the stored object "
				  "or a base is corrupt", oid, hex);
		goto done;
	}
	if (out && durable && fsync(fd) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", out);
done:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The payload of a delta object streamed from the store into a pipe by a
 * thread of its own while the codec reads the other end: the payload is
 * never written to a scratch file and read back. */
typedef struct feeder {
	tp_transfer *t;
	const char *oid;
	const tp_store_object_info *info;
	int fd;
	int rc;
	atomic_bool finished; /* the store is done with the payload, rc set */
	tp_error_state err;
} feeder;

static void *feed_main(void *arg)
{
	feeder *f = arg;
	sigset_t pipe_sig;
	/* A reader that stopped early makes write fail with EPIPE, here only. */
	sigemptyset(&pipe_sig);
	sigaddset(&pipe_sig, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_sig, NULL);
	f->rc = tp_store_object_get_payload(f->t->store, f->oid, f->info, f->fd);
	if (f->rc)
		tp_error_state_capture(&f->err);
	atomic_store(&f->finished, true);
	close(f->fd);
	return NULL;
}

#define PIPE_BYTES (1 << 20)

static int apply_streamed(tp_transfer *t, const char *oid, uint64_t size,
			  const tp_store_object_info *info, char **bases, size_t nbases,
			  const char *out, bool durable, bool report)
{
	int p[2];
	pthread_t th;
	if (pipe2(p, O_CLOEXEC) != 0)
		return tp_error_set_errno(TP_EIO, errno, "creating a pipe");
	/* The default 64 KiB makes the two sides take turns a few times per
	 * frame; 1 MiB (the usual unprivileged maximum) lets the store read
	 * ahead. Only a hint: a smaller pipe works too. */
	(void)fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES);
	feeder f = { .t = t, .oid = oid, .info = info, .fd = p[1] };
	atomic_init(&f.finished, false);
	if (pthread_create(&th, NULL, feed_main, &f) != 0) {
		close(p[0]);
		close(p[1]);
		return tp_error_set(TP_EIO, "cannot start a thread to read object %s", oid);
	}
	int rc = tp_transfer_apply(t, p[0], bases, nbases, oid, size, out, durable, report);
	/* A store that failed first is why the stream ended short; a codec that
	 * stopped first is why the store could not write. */
	bool store_first = atomic_load(&f.finished) && f.rc;
	close(p[0]);
	pthread_join(th, NULL);
	if (f.rc && (rc == 0 || store_first)) {
		tp_error_state_restore(&f.err);
		rc = f.rc;
	}
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

/* A local copy of a base is used without hashing it first: reading it once
 * to hash it and again to apply it cost a full pass over the base. The
 * rebuild proves it anyway: every object rebuilt from it is hashed against
 * its oid, so a wrong byte that matters fails that check. A rebuild that
 * fails having used such a copy is run again with every local copy hashed
 * first, so a bad one is named and the store used instead. */

/* Distinct objects a plan may name (local ones included), and its index:
 * open addressing, at most half full. */
#define GRAPH_NODES_MAX 4096
#define GRAPH_SLOTS 8192

typedef struct rebuild_graph {
	tp_array(rebuild_node) nodes; /* capped at GRAPH_NODES_MAX */
	size_t slot[GRAPH_SLOTS]; /* node index + 1; 0 is empty */
	size_t *order;            /* nodes from the store, each after its bases */
	size_t norder;
	size_t nstore;            /* nodes from the store, planned or being planned */
	const tp_transfer_scratch *kept; /* bases this operation already has */
	bool check_local;         /* hash local copies before using them */
	size_t unchecked;         /* local copies used without hashing them */
} rebuild_graph;

static size_t graph_slot(const rebuild_graph *g, const char *oid)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (const char *p = oid; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	size_t i = (size_t)h & (GRAPH_SLOTS - 1);
	while (g->slot[i] && strcmp(g->nodes.ptr[g->slot[i] - 1].oid, oid) != 0)
		i = (i + 1) & (GRAPH_SLOTS - 1);
	return i;
}

static void graph_free(rebuild_graph *g)
{
	for (size_t i = 0; i < g->nodes.len; i++) {
		if (g->nodes.ptr[i].scratch)
			unlink(g->nodes.ptr[i].path);
		free(g->nodes.ptr[i].path);
		free(g->nodes.ptr[i].bases);
	}
	tp_array_clear(&g->nodes);
	free(g->order);
	free(g);
}

/* Read what rebuilding node i from the store needs: its header, and for a
 * delta its checked manifest and, recursively, its bases. */
static int graph_add(tp_transfer *t, rebuild_graph *g, const char *oid, uint64_t size,
		     int depth, size_t *out);

static int graph_plan_store(tp_transfer *t, rebuild_graph *g, size_t i, int depth)
{
	char oid[TP_OID_HEXLEN + 1]; /* nodes.ptr moves as nodes are added */
	uint64_t size = g->nodes.ptr[i].size;
	memcpy(oid, g->nodes.ptr[i].oid, sizeof(oid));
	tp_store_manifest *m = NULL;
	char *text = NULL;
	if (depth > TP_TRANSFER_CHAIN_LIMIT)
		return tp_error_set(TP_ECORRUPT, "object %s: delta chain deeper than %d", oid,
				    TP_TRANSFER_CHAIN_LIMIT);
	if (g->nstore++ == TP_TRANSFER_REBUILDS_MAX)
		return tp_error_set(TP_ETOOBIG, "rebuilding %s needs more than %d objects from the "
				    "store", g->nodes.ptr[0].oid, TP_TRANSFER_REBUILDS_MAX);
	int rc = tp_store_object_manifest(t->store, oid, &g->nodes.ptr[i].info, &text);
	if (rc)
		return rc;
	tp_store_object_info info = g->nodes.ptr[i].info;
	if (info.size != size) {
		rc = tp_error_set(TP_ECORRUPT, "object %s in the store is %llu bytes, expected %llu",
				  oid, (unsigned long long)info.size, (unsigned long long)size);
	} else if (info.kind == TP_STORE_KIND_WHOLE_ZSTD) {
		rc = tp_provenance_whole_check(t->provenance, oid);
	} else if ((rc = manifest_load(t, &m, text, oid, size)) == 0) {
		g->nodes.ptr[i].visiting = true;
		if (m->nbases && !(g->nodes.ptr[i].bases = calloc(m->nbases, sizeof(size_t))))
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		for (size_t k = 0; !rc && k < m->nbases; k++) {
			size_t b;
			if ((rc = graph_add(t, g, m->bases[k].oid, m->bases[k].size, depth + 1, &b)) != 0)
				break;
			g->nodes.ptr[i].bases[g->nodes.ptr[i].nbases++] = b;
			g->nodes.ptr[b].users++;
		}
		g->nodes.ptr[i].visiting = false;
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
		const rebuild_node *n = &g->nodes.ptr[g->slot[s] - 1];
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
	if (g->nodes.len == GRAPH_NODES_MAX)
		return tp_error_set(TP_ETOOBIG, "rebuilding %s names more than %d objects",
				    g->nodes.ptr[0].oid, GRAPH_NODES_MAX);
	rebuild_node fresh = { .size = size };
	memcpy(fresh.oid, oid, sizeof(fresh.oid));
	int rc = tp_array_push(&g->nodes, fresh);
	if (rc)
		return rc;
	size_t i = g->nodes.len - 1;
	rebuild_node *n = &g->nodes.ptr[i];
	g->slot[s] = i + 1;
	*out = i;
	/* A base this operation holds, or a good local copy, needs nothing
	 * from the store; the object asked for is always rebuilt. */
	const char *kept = depth ? tp_transfer_scratch_find(g->kept, oid) : NULL;
	if (kept)
		return (n->path = strdup(kept)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	bool unchecked = false;
	if (depth && tp_transfer_local_copy(t, oid, size, NULL, g->check_local ? NULL : &unchecked,
					    &n->path) == 0) {
		tp_trace("base %s: local copy %s%s", oid, n->path,
			 unchecked ? ", checked by what is rebuilt from it" : "");
		g->unchecked += unchecked;
		return 0;
	}
	n->from_store = true;
	rc = graph_plan_store(t, g, i, depth);
	return rc && depth ? tp_error_wrap(rc, "base %s", oid) : rc;
}

/* Refuse, before anything is written, a plan whose bases claim more bytes
 * than tenpak.rebuildfactor allows (a tiny object can claim gigabytes and
 * fail its hash only once written) or that needs more scratch space than
 * the tmp directory has free. */
static int graph_check(const tp_transfer *t, const rebuild_graph *g, size_t root)
{
	uint64_t claimed = 0, limit, live = 0, peak = 0;
	unsigned *users = calloc(g->nodes.len ? g->nodes.len : 1, sizeof(*users));
	char a[32], b[32];
	if (!users)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < g->nodes.len; i++)
		users[i] = g->nodes.ptr[i].users;
	/* Replay the rebuild: a file lives from its rebuild to its last reader. */
	for (size_t k = 0; k < g->norder; k++) {
		const rebuild_node *n = &g->nodes.ptr[g->order[k]];
		/* Payloads stream from the store into the codec: no scratch. */
		if (g->order[k] != root)
			claimed += n->size;
		if (live + n->size > peak)
			peak = live + n->size;
		live += n->size;
		for (size_t j = 0; j < n->nbases; j++)
			if (--users[n->bases[j]] == 0 && g->nodes.ptr[n->bases[j]].from_store)
				live -= g->nodes.ptr[n->bases[j]].size;
	}
	free(users);
	if (__builtin_mul_overflow((uint64_t)t->rebuild_factor, g->nodes.ptr[root].size, &limit) ||
	    __builtin_add_overflow(limit, TP_TRANSFER_REBUILD_SLACK, &limit))
		limit = UINT64_MAX;
	tp_trace("object %s: rebuilding %zu objects from the store, bases claim %llu bytes, "
		 "scratch peak %llu bytes", g->nodes.ptr[root].oid, g->norder, (unsigned long long)claimed,
		 (unsigned long long)peak);
	if (claimed > limit) {
		tp_fmt_bytes(claimed, a, sizeof(a));
		tp_fmt_bytes(g->nodes.ptr[root].size, b, sizeof(b));
		return tp_error_set(TP_ETOOBIG, "object %s (%s): its bases in the store claim %s, more "
				    "than tenpak.rebuildfactor (%u) times its size plus 64 MiB",
				    g->nodes.ptr[root].oid, b, a, t->rebuild_factor);
	}
	struct statvfs fs;
	if (statvfs(t->tmp_dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < peak) {
		tp_fmt_bytes(peak, a, sizeof(a));
		tp_fmt_bytes((uint64_t)fs.f_bavail * fs.f_frsize, b, sizeof(b));
		return tp_error_set(TP_ENOSPACE, "object %s: rebuilding it needs %s of scratch space "
				    "in %s, and only %s is free", g->nodes.ptr[root].oid, a, t->tmp_dir, b);
	}
	return 0;
}

/* Rebuild one node from the store into out, its bases already on disk. */
static int node_rebuild(tp_transfer *t, const rebuild_graph *g, const rebuild_node *n,
			const char *out, bool durable, bool report)
{
	char **bases = NULL;
	int rc, fd;
	if (n->info.kind == TP_STORE_KIND_WHOLE_ZSTD) {
		/* The object layer stops at the object's size: a frame that
		 * inflates past it is an error before more is written. */
		if ((rc = open_empty(out, &fd)) != 0)
			return rc;
		rc = tp_store_object_get_fd(t->store, n->oid, n->size, fd,
					    report ? t->progress : NULL, t->progress_ctx);
		close(fd);
		return rc;
	}
	if (!(bases = calloc(n->nbases + 1, sizeof(*bases))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t j = 0; j < n->nbases; j++)
		bases[j] = g->nodes.ptr[n->bases[j]].path;
	/* A base's scratch file is removed when the rebuild ends: only the
	 * object handed to git-lfs is made durable. */
	rc = apply_streamed(t, n->oid, n->size, &n->info, bases, n->nbases, out, durable, report);
	free(bases);
	return rc;
}

static int graph_run(tp_transfer *t, rebuild_graph *g, size_t root, const char *out, bool report)
{
	for (size_t k = 0; k < g->norder; k++) {
		size_t i = g->order[k];
		rebuild_node *n = &g->nodes.ptr[i];
		int rc = 0;
		if (i != root) {
			rc = tp_transfer_scratch_new(t, "base", &n->path);
			n->scratch = rc == 0;
		}
		if (!rc)
			rc = node_rebuild(t, g, n, i == root ? out : n->path, i == root, report && i == root);
		if (rc)
			return i == root ? tp_error_wrap(rc, "rebuilding %s", n->oid)
					 : tp_error_wrap(rc, "rebuilding %s: base %s", g->nodes.ptr[root].oid,
							 n->oid);
		for (size_t j = 0; j < n->nbases; j++) {
			rebuild_node *b = &g->nodes.ptr[n->bases[j]];
			if (--b->users == 0 && b->scratch) {
				tp_transfer_scratch_drop(b->path);
				b->path = NULL;
				b->scratch = false;
			}
		}
	}
	return 0;
}

/* One rebuild; *retry tells whether it failed in a way a bad unchecked
 * local copy could explain. */
static int rebuild_once(tp_transfer *t, const tp_transfer_scratch *kept, const char *oid,
			uint64_t size, const char *out, bool report, bool check_local, bool *retry)
{
	rebuild_graph *g = calloc(1, sizeof(*g));
	size_t root = 0;
	int rc = g ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	*retry = false;
	if (!rc && !(g->order = calloc(TP_TRANSFER_REBUILDS_MAX, sizeof(*g->order))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	if (!rc) {
		g->nodes.cap = GRAPH_NODES_MAX;
		g->kept = kept;
		g->check_local = check_local;
		rc = graph_add(t, g, oid, size, 0, &root);
	}
	if (!rc)
		rc = graph_check(t, g, root);
	if (!rc) {
		rc = graph_run(t, g, root, out, report);
		/* A wrong base shows as a hash that differs, or as a base the
		 * delta does not recognise (its fingerprint). */
		*retry = g->unchecked && (rc == TP_ECORRUPT || rc == TP_ENOTFOUND);
	}
	if (g)
		graph_free(g);
	return rc;
}

int tp_transfer_rebuild(tp_transfer *t, const tp_transfer_scratch *kept, const char *oid,
			uint64_t size, const char *out, bool report)
{
	bool retry;
	int rc = rebuild_once(t, kept, oid, size, out, report, false, &retry);
	if (rc && retry) {
		tp_log(TP_LOG_WARN, "%s; hashing the local copies it used and rebuilding again",
		       tp_error_last());
		rc = rebuild_once(t, kept, oid, size, out, report, true, &retry);
	}
	return rc;
}

int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path)
{
	tp_store_object_info info;
	int rc = tp_transfer_rebuild(t, NULL, oid, size, path, true);
	/* The object itself absent (not one of its bases): name the store. */
	if (rc == TP_ENOTFOUND && tp_store_object_stat(t->store, oid, &info) == TP_ENOTFOUND)
		rc = tp_store_object_absent(t->store, oid);
	return rc;
}
