/* Deltas written by earlier format versions still apply byte-exactly. */
#include "testutil.h"

#include <unistd.h>

/* sha256 of the target that tests/data/delta/v1-small.tpdelta rebuilds
 * (see tests/data/delta/README.md). */
#define V1_TARGET_SHA "1e0649ab96bbd80b6b480957b54b8df323e1e5d085efe29d2c9d8d8ad0754e00"
/* The same for v2-small.tpdelta (qgrid segments). */
#define V2_TARGET_SHA "cd15e17cc577ba2d1ed41c8b9bc8312cea51ce60a6d67e1f92a4acf22cfaea3e"

/* Apply a committed delta with 1 and 2 threads; the result must hash to sha. */
static void check_object(const char *base, const char *delta, const char *out, size_t size,
			 const char *sha)
{
	for (unsigned threads = 1; threads <= 2; threads++) {
		tp_delta_opts o = { 0 };
		o.threads = threads;
		unlink(out);
		CHECK(tp_delta_apply_file(delta, &base, 1, out, &o, NULL) == 0);
		size_t n = 0;
		uint8_t *got = t_read_file(out, &n);
		char hex[TP_OID_HEXLEN + 1] = "";
		if (got)
			tp_sha256_hex_of(got, n, hex);
		CHECK(n == size && strcmp(hex, sha) == 0);
		free(got);
	}
}

/* A flipped byte in a coded plane is refused, not published. */
static void check_flip(const char *base, const char *delta, const char *out, const char *dir)
{
	size_t dn = 0;
	uint8_t *d = t_read_file(delta, &dn);
	CHECK(d && dn > 10000);
	if (d) {
		char bad[512];
		snprintf(bad, sizeof(bad), "%s/bad", dir);
		d[dn - 5000] ^= 0x10;
		CHECK(t_write_bytes(bad, d, dn) == 0);
		unlink(out);
		CHECK(tp_delta_apply_file(bad, &base, 1, out, NULL, NULL) < 0);
		CHECK(!t_exists(out));
		unlink(bad);
		free(d);
	}
}

int main(int argc, char **argv)
{
	const char *fix = argc > 1 ? argv[1] : "tests/data/fixtures";
	char base[512], v1[512], v2[512], out[512], dir[] = "/tmp/tp-delta-compat-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	snprintf(base, sizeof(base), "%s/base-bf16.safetensors", fix);
	snprintf(v1, sizeof(v1), "%s/../delta/v1-small.tpdelta", fix);
	snprintf(v2, sizeof(v2), "%s/../delta/v2-small.tpdelta", fix);
	snprintf(out, sizeof(out), "%s/out", dir);
	if (!t_exists(base) || !t_exists(v1) || !t_exists(v2)) {
		fprintf(stderr, "missing %s, %s or %s\n", base, v1, v2);
		return 1;
	}
	check_object(base, v1, out, 394152, V1_TARGET_SHA);
	check_object(base, v2, out, 656296, V2_TARGET_SHA);
	check_flip(base, v1, out, dir);
	check_flip(base, v2, out, dir);
	unlink(out);
	rmdir(dir);
	return TP_TEST_RESULT();
}
