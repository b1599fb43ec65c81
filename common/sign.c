/*
 * Ed25519 signing keys for manifest provenance. The secret key never sits in
 * ordinary heap memory: it lives in a sodium_malloc'd region that is
 * inaccessible except for the instant it is used.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp_common.h"

#define KEY_FILE_TAG "tenpak-ed25519-secret-key "
#define PUBLIC_TAG "ed25519:"
#define B64 sodium_base64_VARIANT_ORIGINAL

struct tp_sign_key {
	unsigned char *secret; /* crypto_sign_SECRETKEYBYTES, guarded */
	unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
};

static int key_alloc(tp_sign_key **out)
{
	tp_sign_key *k = calloc(1, sizeof(*k));
	if (!k || sodium_init() < 0 || !(k->secret = sodium_malloc(crypto_sign_SECRETKEYBYTES))) {
		free(k);
		return tp_error_set(TP_ENOMEM, "cannot allocate guarded memory for a key");
	}
	*out = k;
	return 0;
}

void tp_sign_key_free(tp_sign_key *k)
{
	if (!k)
		return;
	sodium_free(k->secret); /* zeroes it */
	free(k);
}

int tp_sign_key_generate(tp_sign_key **out)
{
	tp_sign_key *k = NULL;
	int rc = key_alloc(&k);
	if (rc)
		return rc;
	crypto_sign_keypair(k->public_key, k->secret);
	sodium_mprotect_noaccess(k->secret);
	*out = k;
	return 0;
}

void tp_sign_key_public(const tp_sign_key *k, char out[TP_SIGN_PUBLIC_TEXT_MAX])
{
	memcpy(out, PUBLIC_TAG, sizeof(PUBLIC_TAG) - 1);
	sodium_bin2base64(out + sizeof(PUBLIC_TAG) - 1, TP_SIGN_PUBLIC_TEXT_MAX - sizeof(PUBLIC_TAG) + 1,
			  k->public_key, sizeof(k->public_key), B64);
}

int tp_sign_key_save(const tp_sign_key *k, const char *path)
{
	char *b64 = sodium_malloc(sodium_base64_ENCODED_LEN(crypto_sign_SECRETKEYBYTES, B64));
	if (!b64)
		return tp_error_set(TP_ENOMEM, "cannot allocate guarded memory");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc = 0;
	if (fd < 0) {
		rc = errno == EEXIST ? tp_error_set(TP_EINVAL, "%s already exists; not overwriting a key", path)
				     : tp_error_set_errno(tp_error_from_errno(errno), errno, "creating %s", path);
		goto done;
	}
	sodium_mprotect_readonly(k->secret);
	sodium_bin2base64(b64, sodium_base64_ENCODED_LEN(crypto_sign_SECRETKEYBYTES, B64), k->secret,
			  crypto_sign_SECRETKEYBYTES, B64);
	sodium_mprotect_noaccess(k->secret);
	if ((rc = tp_fs_write_all(fd, KEY_FILE_TAG, sizeof(KEY_FILE_TAG) - 1)) == 0 &&
	    (rc = tp_fs_write_all(fd, b64, strlen(b64))) == 0 && (rc = tp_fs_write_all(fd, "\n", 1)) == 0 &&
	    fsync(fd) != 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", path);
	close(fd);
	if (rc)
		unlink(path);
done:
	sodium_free(b64);
	return rc;
}

int tp_sign_key_load(tp_sign_key **out, const char *path)
{
	enum { FILE_MAX = 256 };
	char *text = sodium_malloc(FILE_MAX + 1);
	tp_sign_key *k = NULL;
	struct stat st;
	size_t got = 0, bin_len = 0;
	int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
	if (!text)
		rc = tp_error_set(TP_ENOMEM, "cannot allocate guarded memory");
	else if (fd < 0)
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "opening signing key %s", path);
	else if (fstat(fd, &st) != 0 || (st.st_mode & 077))
		rc = tp_error_set(TP_EAUTH, "signing key %s is readable by others; chmod 600 it", path);
	else if ((rc = tp_fs_read_full(fd, text, FILE_MAX, &got)) == 0)
		rc = key_alloc(&k);
	if (rc)
		goto done;
	text[got] = '\0';
	text[strcspn(text, "\r\n")] = '\0';
	const char *b64 = text + sizeof(KEY_FILE_TAG) - 1;
	if (strncmp(text, KEY_FILE_TAG, sizeof(KEY_FILE_TAG) - 1) != 0 ||
	    sodium_base642bin(k->secret, crypto_sign_SECRETKEYBYTES, b64, strlen(b64), NULL, &bin_len,
			      NULL, B64) != 0 ||
	    bin_len != crypto_sign_SECRETKEYBYTES) {
		rc = tp_error_set(TP_EINVAL, "%s is not a tenpak signing key", path);
		goto done;
	}
	crypto_sign_ed25519_sk_to_pk(k->public_key, k->secret);
	sodium_mprotect_noaccess(k->secret);
done:
	if (fd >= 0)
		close(fd);
	sodium_free(text);
	if (rc) {
		tp_sign_key_free(k);
		return rc;
	}
	*out = k;
	return 0;
}

int tp_sign(const tp_sign_key *k, const void *msg, size_t len, char out[TP_SIGN_TEXT_MAX])
{
	unsigned char sig[crypto_sign_BYTES];
	sodium_mprotect_readonly(k->secret);
	crypto_sign_detached(sig, NULL, msg, len, k->secret);
	sodium_mprotect_noaccess(k->secret);
	sodium_bin2base64(out, TP_SIGN_TEXT_MAX, sig, sizeof(sig), B64);
	return 0;
}

int tp_sign_verify(const char *public_text, const void *msg, size_t len, const char *signature)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES], sig[crypto_sign_BYTES];
	size_t n = 0;
	if (sodium_init() < 0)
		return tp_error_set(TP_EIO, "cannot initialise libsodium");
	if (strncmp(public_text, PUBLIC_TAG, sizeof(PUBLIC_TAG) - 1) != 0 ||
	    sodium_base642bin(pk, sizeof(pk), public_text + sizeof(PUBLIC_TAG) - 1,
			      strlen(public_text + sizeof(PUBLIC_TAG) - 1), NULL, &n, NULL, B64) != 0 ||
	    n != sizeof(pk))
		return tp_error_set(TP_EINVAL, "\"%.80s\" is not an ed25519 public key", public_text);
	if (sodium_base642bin(sig, sizeof(sig), signature, strlen(signature), NULL, &n, NULL, B64) != 0 ||
	    n != sizeof(sig))
		return tp_error_set(TP_EINVAL, "malformed signature");
	if (crypto_sign_verify_detached(sig, msg, len, pk) != 0)
		return tp_error_set(TP_EAUTH, "signature does not verify");
	return 0;
}

/* Here because libsodium is: common/ is the only module that links it. */
void tp_secure_zero(void *p, size_t n)
{
	sodium_memzero(p, n);
}
