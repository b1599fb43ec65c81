/*
 * tp_sha256: FIPS 180-4 / NIST example vectors, and agreement with
 * libsodium's SHA-256 on random data fed in random-sized pieces, for both
 * the default (SHA-NI where the CPU has it) and the portable block function.
 */
#include "tp_common.h"
#include "tp_test.h"

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Test hook in common/sha256.c: states initialised afterwards use portable C. */
void tp_sha256_force_portable(bool on);

static const char *path_name = "default";

/* Deterministic xorshift64*, so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1du;
}

static void hex_of(const void *msg, size_t n, char out[TP_OID_HEXLEN + 1])
{
	tp_sha256_hex_of(msg, n, out);
}

static void test_vectors(void)
{
	static const struct {
		const char *msg, *hex;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
		{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
		  "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
	};
	char hex[TP_OID_HEXLEN + 1];
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		hex_of(v[i].msg, strlen(v[i].msg), hex);
		CHECK_STR(hex, v[i].hex);
	}
	hex_of(NULL, 0, hex);
	CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

	/* One million 'a', fed in uneven pieces to cross block boundaries. */
	char a[1000];
	memset(a, 'a', sizeof(a));
	tp_sha256 h;
	unsigned char d[TP_SHA256_LEN];
	tp_sha256_init(&h);
	for (size_t left = 1000000; left;) {
		size_t k = left < 997 ? left : 997;
		tp_sha256_update(&h, a, k);
		left -= k;
	}
	tp_sha256_final(&h, d);
	tp_sha256_hex(d, hex);
	CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Hash buf in random-sized update() pieces (some empty); compare with libsodium. */
static int agrees(const unsigned char *buf, size_t n, size_t max_piece)
{
	unsigned char want[TP_SHA256_LEN], got[TP_SHA256_LEN];
	crypto_hash_sha256(want, buf, n);
	tp_sha256 h;
	tp_sha256_init(&h);
	for (size_t off = 0; off < n;) {
		size_t k = (size_t)(rng() % (max_piece + 1));
		if (k > n - off)
			k = n - off;
		tp_sha256_update(&h, buf + off, k);
		off += k;
	}
	tp_sha256_final(&h, got);
	if (memcmp(want, got, sizeof(want)) != 0) {
		fprintf(stderr, "  %s path: mismatch at length %zu (pieces <= %zu)\n", path_name, n,
			max_piece);
		return 0;
	}
	return 1;
}

static void test_against_libsodium(void)
{
	enum { BIG = 5 << 20 };
	unsigned char *buf = malloc(BIG);
	CHECK(buf != NULL);
	if (!buf)
		return;
	for (size_t i = 0; i < BIG; i++)
		buf[i] = (unsigned char)rng();

	int bad = 0;
	for (size_t n = 0; n <= 300; n++) {
		bad += !agrees(buf, n, 1);
		bad += !agrees(buf + 1, n, 70);		 /* misaligned input too */
		bad += !agrees(buf + 3, n, n ? n : 1); /* mostly one or two pieces */
	}
	CHECK_EQ_INT(bad, 0);

	static const size_t sizes[] = { 1 << 20, (3 << 20) + 17, BIG - 1 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		CHECK(agrees(buf, sizes[i], 200000));
		CHECK(agrees(buf, sizes[i], 63));
	}
	free(buf);
}

static void test_file(void)
{
	char path[] = "/tmp/tp_test_sha256_XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	static const char msg[] = "abc";
	CHECK(write(fd, msg, 3) == 3);
	close(fd);
	char hex[TP_OID_HEXLEN + 1];
	uint64_t size = 0;
	CHECK_EQ_INT(tp_sha256_file(path, hex, &size), 0);
	CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	CHECK_EQ_INT(size, 3);
	unlink(path);
}

int main(void)
{
	if (sodium_init() < 0) {
		fprintf(stderr, "sodium_init failed\n");
		return 1;
	}
	TP_TEST_RUN(test_vectors);
	TP_TEST_RUN(test_against_libsodium);
	TP_TEST_RUN(test_file);

	tp_sha256_force_portable(true);
	path_name = "portable";
	TP_TEST_RUN(test_vectors);
	TP_TEST_RUN(test_against_libsodium);
	tp_sha256_force_portable(false);

	return TP_TEST_RESULT();
}
