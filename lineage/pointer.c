/*
 * LFS pointers in git: parsing a pointer file (spec v1) and reading a blob
 * or a pointer at a path of a git tree. Shared by the pointer index
 * (index.c), which scans every tree, and detection, which reads metadata
 * and base pointers from the tree of the target's commit.
 */
#include <stdlib.h>
#include <string.h>

#include "lineage_internal.h"

bool tp_lineage_pointer_parse(const char *p, size_t n, char oid[TP_OID_HEXLEN + 1], uint64_t *size)
{
	static const char version[] = "version https://git-lfs.github.com/spec/v1\n";
	char text[TP_LINEAGE_POINTER_MAX + 1];
	if (n > TP_LINEAGE_POINTER_MAX || n < sizeof(version) - 1 ||
	    memcmp(p, version, sizeof(version) - 1))
		return false;
	memcpy(text, p, n);
	text[n] = '\0';
	const char *o = strstr(text, "\noid sha256:");
	const char *s = strstr(text, "\nsize ");
	if (!o || !s)
		return false;
	o += 12;
	if (strlen(o) < TP_OID_HEXLEN + 1 || o[TP_OID_HEXLEN] != '\n')
		return false;
	memcpy(oid, o, TP_OID_HEXLEN);
	oid[TP_OID_HEXLEN] = '\0';
	const char *end;
	uint64_t v;
	if (!tp_oid_valid(oid) || tp_parse_u64_prefix(s + 6, &end, 0, UINT64_MAX, &v) != 0 ||
	    *end != '\n')
		return false;
	*size = v;
	return true;
}

int tp_lineage_tree_read(git_tree *tree, const char *path, size_t cap, tp_buf *out)
{
	git_tree_entry *e = NULL;
	git_blob *blob = NULL;
	int rc = 0;
	if (git_tree_entry_bypath(&e, tree, path) != 0 || git_tree_entry_type(e) != GIT_OBJECT_BLOB) {
		rc = TP_ENOTFOUND;
		goto done;
	}
	if (git_blob_lookup(&blob, git_tree_owner(tree), git_tree_entry_id(e)) != 0) {
		rc = tp_git_fail(TP_EIO, path);
		goto done;
	}
	if ((size_t)git_blob_rawsize(blob) > cap) {
		rc = TP_ETOOBIG;
		goto done;
	}
	tp_buf_init(out, cap);
	rc = tp_buf_add(out, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
done:
	git_blob_free(blob);
	git_tree_entry_free(e);
	return rc;
}

int tp_lineage_tree_pointer(git_tree *tree, const char *path, tp_lineage_file *f)
{
	tp_buf b;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	int rc = tp_lineage_tree_read(tree, path, TP_LINEAGE_POINTER_MAX, &b);
	if (rc == TP_ETOOBIG)
		return TP_ENOTFOUND; /* a regular file, not a pointer */
	if (rc)
		return rc;
	rc = tp_lineage_pointer_parse(b.ptr, b.len, oid, &size)
		? tp_lineage_file_set(f, path, oid, size, NULL)
		: TP_ENOTFOUND;
	tp_buf_free(&b);
	return rc;
}
