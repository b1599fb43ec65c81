/* Deltas written by earlier format versions still apply byte-exactly. */
#include "testutil.h"

#include <unistd.h>

/* sha256 of the target that tests/data/delta/v1-small.tpdelta rebuilds
 * (see tests/data/delta/README.md). */
#define V1_TARGET_SHA "1e0649ab96bbd80b6b480957b54b8df323e1e5d085efe29d2c9d8d8ad0754e00"

int main(int argc, char **argv)
{
	const char *fix = argc > 1 ? argv[1] : "tests/data/fixtures";
	char base[512], delta[512], out[512], dir[] = "/tmp/tp-delta-compat-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	snprintf(base, sizeof(base), "%s/base-bf16.safetensors", fix);
	snprintf(delta, sizeof(delta), "%s/../delta/v1-small.tpdelta", fix);
	snprintf(out, sizeof(out), "%s/out", dir);
	if (!t_exists(base) || !t_exists(delta)) {
		fprintf(stderr, "missing %s or %s\n", base, delta);
		return 1;
	}
	const char *b = base;
	for (unsigned threads = 1; threads <= 2; threads++) {
		tp_delta_opts o = { 0 };
		o.threads = threads;
		unlink(out);
		CHECK(tp_delta_apply_file(delta, &b, 1, out, &o, NULL) == 0);
		size_t n = 0;
		uint8_t *got = t_read_file(out, &n);
		char hex[TP_OID_HEXLEN + 1] = "";
		if (got)
			tp_sha256_hex_of(got, n, hex);
		CHECK(n == 394152 && strcmp(hex, V1_TARGET_SHA) == 0);
		free(got);
	}
	/* A flipped byte in a coded plane is refused, not published. */
	size_t dn = 0;
	uint8_t *d = t_read_file(delta, &dn);
	CHECK(d && dn > 10000);
	if (d) {
		char bad[512];
		snprintf(bad, sizeof(bad), "%s/bad", dir);
		d[dn - 5000] ^= 0x10;
		CHECK(t_write_bytes(bad, d, dn) == 0);
		unlink(out);
		CHECK(tp_delta_apply_file(bad, &b, 1, out, NULL, NULL) < 0);
		CHECK(!t_exists(out));
		unlink(bad);
		free(d);
	}
	unlink(out);
	rmdir(dir);
	return TP_TEST_RESULT();
}
