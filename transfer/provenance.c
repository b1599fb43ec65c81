/*
 * Provenance: who wrote a manifest. tenpak.signingkey signs every manifest
 * written; tenpak.verify and tenpak.trustedkeys decide which manifests a
 * download accepts. The signature covers the manifest's canonical form (the
 * fields that decide what the object rebuilds to); the Ed25519 primitives
 * are common/'s.
 */
#include "tp_transfer.h"

#include "tp_array.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_provenance {
	tp_sign_key *signer;          /* tenpak.signingkey: signs every manifest */
	tp_provenance_verify verify;  /* tenpak.verify */
	tp_array(char *) trusted;     /* tenpak.trustedkeys: "ed25519:..." texts */
};

/* Keys in tenpak.trustedkeys: config is outside input, and no team has
 * this many signers. */
#define TRUSTED_MAX 1024

const char *tp_provenance_sig_name(tp_provenance_sig s)
{
	switch (s) {
	case TP_PROVENANCE_SIG_NONE: return "no manifest";
	case TP_PROVENANCE_SIG_UNSIGNED: return "unsigned";
	case TP_PROVENANCE_SIG_TRUSTED: return "signed, trusted";
	case TP_PROVENANCE_SIG_VALID: return "signed";
	case TP_PROVENANCE_SIG_UNTRUSTED: return "signed, untrusted key";
	case TP_PROVENANCE_SIG_BAD: return "bad signature";
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

static int trusted_add(tp_provenance *p, const char *key, size_t len)
{
	int rc = tp_array_reserve(&p->trusted, 1);
	if (rc)
		return tp_error_wrap(rc, "tenpak.trustedkeys");
	char *k = strndup(key, len);
	if (!k)
		return tp_error_set(TP_ENOMEM, "out of memory");
	p->trusted.ptr[p->trusted.len++] = k;
	return 0;
}

static int config_read(tp_provenance *p, tp_git_repo *repo)
{
	char *v = NULL, *path = NULL;
	int rc = 0;
	p->verify = TP_PROVENANCE_VERIFY_IF_SIGNED;
	if (tp_git_config_get(repo, "tenpak.verify", &v) == 0) {
		if (strcmp(v, "off") == 0)
			p->verify = TP_PROVENANCE_VERIFY_OFF;
		else if (strcmp(v, "required") == 0)
			p->verify = TP_PROVENANCE_VERIFY_REQUIRED;
		else if (strcmp(v, "if-signed") != 0)
			rc = tp_error_set(TP_ECONFIG, "tenpak.verify must be off, if-signed or required, "
					  "not \"%s\"", v);
		free(v);
		v = NULL;
	}
	if (!rc && tp_git_config_get(repo, "tenpak.trustedkeys", &v) == 0) {
		for (char *s = v; !rc && *s;) {
			size_t skip = strspn(s, " \t,"), len;
			s += skip;
			len = strcspn(s, " \t,");
			if (len)
				rc = trusted_add(p, s, len);
			s += len;
		}
		free(v);
		v = NULL;
	}
	if (!rc && p->verify == TP_PROVENANCE_VERIFY_REQUIRED && p->trusted.len == 0)
		rc = tp_error_set(TP_ECONFIG, "tenpak.verify is required but tenpak.trustedkeys "
				  "lists no key");
	if (!rc && tp_git_config_get(repo, "tenpak.signingkey", &v) == 0) {
		rc = expand_home(v, &path);
		if (!rc)
			rc = tp_sign_key_load(&p->signer, path);
		if (rc)
			tp_error_wrap(TP_ECONFIG, "tenpak.signingkey");
		free(path);
		free(v);
	}
	return rc ? TP_ECONFIG : 0;
}

int tp_provenance_new(tp_provenance **out, tp_git_repo *repo)
{
	tp_provenance *p = calloc(1, sizeof(*p));
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	p->trusted.cap = TRUSTED_MAX;
	int rc = config_read(p, repo);
	if (rc) {
		tp_provenance_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void tp_provenance_free(tp_provenance *p)
{
	if (!p)
		return;
	tp_sign_key_free(p->signer);
	for (size_t i = 0; i < p->trusted.len; i++)
		free(p->trusted.ptr[i]);
	tp_array_clear(&p->trusted);
	free(p);
}

bool tp_provenance_signs(const tp_provenance *p)
{
	return p->signer != NULL;
}

int tp_provenance_manifest_sign(const tp_provenance *p, tp_store_manifest *m,
				char signer[TP_SIGN_PUBLIC_TEXT_MAX], char sig[TP_SIGN_TEXT_MAX])
{
	if (!p->signer)
		return 0;
	tp_buf canon = TP_BUF_INIT(1 << 20);
	int rc = tp_store_manifest_canonical(m, &canon);
	if (!rc)
		rc = tp_sign(p->signer, canon.ptr, canon.len, sig);
	tp_buf_free(&canon);
	if (rc)
		return rc;
	tp_sign_key_public(p->signer, signer);
	m->signer = signer;
	m->signature = sig;
	return 0;
}

static bool trusted(const tp_provenance *p, const char *key)
{
	for (size_t i = 0; i < p->trusted.len; i++)
		if (strcmp(p->trusted.ptr[i], key) == 0)
			return true;
	return false;
}

tp_provenance_sig tp_provenance_manifest_status(const tp_provenance *p,
						const tp_store_manifest *m)
{
	tp_buf canon = TP_BUF_INIT(1 << 20);
	if (!m->signature)
		return TP_PROVENANCE_SIG_UNSIGNED;
	int rc = tp_store_manifest_canonical(m, &canon);
	if (!rc)
		rc = tp_sign_verify(m->signer, canon.ptr, canon.len, m->signature);
	tp_buf_free(&canon);
	if (rc)
		return TP_PROVENANCE_SIG_BAD;
	if (!p->trusted.len)
		return TP_PROVENANCE_SIG_VALID;
	return trusted(p, m->signer) ? TP_PROVENANCE_SIG_TRUSTED : TP_PROVENANCE_SIG_UNTRUSTED;
}

int tp_provenance_manifest_check(const tp_provenance *p, const tp_store_manifest *m,
				 const char *oid)
{
	if (p->verify == TP_PROVENANCE_VERIFY_OFF)
		return 0;
	tp_provenance_sig st = tp_provenance_manifest_status(p, m);
	if (st == TP_PROVENANCE_SIG_BAD)
		return tp_error_set(TP_EAUTH, "object %s: the manifest's signature does not verify "
				    "(key %s)", oid, m->signer);
	if (st == TP_PROVENANCE_SIG_UNTRUSTED)
		return tp_error_set(TP_EAUTH, "object %s: manifest signed by %s, which is not in "
				    "tenpak.trustedkeys", oid, m->signer);
	if (p->verify == TP_PROVENANCE_VERIFY_REQUIRED && st != TP_PROVENANCE_SIG_TRUSTED)
		return tp_error_set(TP_EAUTH, "object %s: the manifest is unsigned and tenpak.verify "
				    "is required", oid);
	return 0;
}

int tp_provenance_whole_check(const tp_provenance *p, const char *oid)
{
	if (p->verify == TP_PROVENANCE_VERIFY_REQUIRED)
		return tp_error_set(TP_EAUTH, "object %s is stored whole (zstd) without a "
				    "manifest, so nothing signs it, and tenpak.verify is "
				    "required", oid);
	return 0;
}
