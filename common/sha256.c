#include "tp_common.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <unistd.h>

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((tp_sha256 *)0)->state),
	       "tp_sha256 storage too small for libsodium state");

void tp_sha256_init(tp_sha256 *h)
{
	crypto_hash_sha256_init((crypto_hash_sha256_state *)h->state);
}

void tp_sha256_update(tp_sha256 *h, const void *data, size_t n)
{
	crypto_hash_sha256_update((crypto_hash_sha256_state *)h->state, data, n);
}

void tp_sha256_final(tp_sha256 *h, unsigned char out[TP_SHA256_LEN])
{
	crypto_hash_sha256_final((crypto_hash_sha256_state *)h->state, out);
}

void tp_sha256_hex(const unsigned char d[TP_SHA256_LEN], char out[TP_OID_HEXLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < TP_SHA256_LEN; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[TP_OID_HEXLEN] = '\0';
}

void tp_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
		    unsigned char out[TP_SHA256_LEN])
{
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, key, key_len);
	crypto_auth_hmacsha256_update(&st, msg, msg_len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

bool tp_oid_valid(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < TP_OID_HEXLEN; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return s[TP_OID_HEXLEN] == '\0';
}

int tp_sha256_file(const char *path, char out_hex[TP_OID_HEXLEN + 1], uint64_t *size_out)
{
	enum { CHUNK = 1 << 20 };
	int rc = 0;
	unsigned char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
	buf = malloc(CHUNK);
	if (!buf) {
		rc = tp_error_set(TP_ENOMEM, "out of memory hashing %s", path);
		goto done;
	}
	tp_sha256 h;
	tp_sha256_init(&h);
	uint64_t total = 0;
	for (;;) {
		size_t got;
		if ((rc = tp_fs_read_full(fd, buf, CHUNK, &got)) != 0) {
			tp_error_wrap(rc, "hashing %s", path);
			goto done;
		}
		tp_sha256_update(&h, buf, got);
		total += got;
		if (got < CHUNK)
			break;
	}
	unsigned char d[TP_SHA256_LEN];
	tp_sha256_final(&h, d);
	tp_sha256_hex(d, out_hex);
	if (size_out)
		*size_out = total;
done:
	free(buf);
	close(fd);
	return rc;
}
