/* Delta-object manifests: round trip, validation of hostile input, and the
 * canonical form signatures cover. Signing keys: round trip and refusals. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp_store.h"
#include "tp_test.h"

#define OID1 "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
#define OID2 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static int parse(tp_store_manifest **m, const char *json)
{
	return tp_store_manifest_parse(m, json, strlen(json));
}

static void test_round_trip(void)
{
	tp_store_manifest_base b = { OID2, 7086664, (char *)"base/model.safetensors" };
	tp_store_manifest m = { .oid = OID1, .size = 5000000000ull, .codec_version = 1, .depth = 3,
				.nbases = 1, .bases = &b, .source = (char *)"history",
				.evidence = (char *)"commit \"x\"", .choice = (char *)"smallest" };
	char *json = NULL;
	tp_store_manifest *back = NULL;
	CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
	CHECK_EQ_INT(parse(&back, json), 0);
	CHECK_STR(back->oid, OID1);
	CHECK(back->size == 5000000000ull);
	CHECK_EQ_INT(back->depth, 3);
	CHECK_EQ_INT(back->nbases, 1);
	CHECK_STR(back->bases[0].oid, OID2);
	CHECK_EQ_INT(back->bases[0].size, 7086664);
	CHECK_STR(back->evidence, "commit \"x\"");
	CHECK(back->signature == NULL);

	tp_buf a = TP_BUF_INIT(4096), c = TP_BUF_INIT(4096);
	CHECK_EQ_INT(tp_store_manifest_canonical(&m, &a), 0);
	CHECK_EQ_INT(tp_store_manifest_canonical(back, &c), 0);
	CHECK_STR(a.ptr, c.ptr);
	CHECK_STR(a.ptr, "tenpak-manifest-v1\noid " OID1 "\nsize 5000000000\ncodec tenpak-delta 1\n"
			 "depth 3\nbase " OID2 " 7086664\n");
	/* Informational text is not covered: it may change without breaking
	 * a signature; every field that decides the bytes is. */
	back->depth = 4;
	tp_buf_reset(&c);
	CHECK_EQ_INT(tp_store_manifest_canonical(back, &c), 0);
	CHECK(strcmp(a.ptr, c.ptr) != 0);
	tp_buf_free(&a);
	tp_buf_free(&c);
	tp_store_manifest_free(back);
	free(json);
}

static void test_hostile(void)
{
	static const char *bad[] = {
		"",
		"[]",
		"{}",
		"{\"format\":\"other\"}",
		"{\"format\":\"tenpak-object\",\"version\":2,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"gzip\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"../../etc/passwd\",\"size\":1,\"depth\":0,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":-1,\"depth\":0,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1e300,\"depth\":0,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":99999,\"bases\":[]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":{}}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":1,\"bases\":[{\"oid\":\"" OID2 "\"}]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":1,\"bases\":[{\"oid\":\"ABC\",\"size\":1}]}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":[],\"signature\":{\"key\":\"k\"}}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":[],\"lineage\":{\"source\":7}}",
		"{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\",\"codec_version\":1,"
		"\"oid\":\"" OID1 "\",\"size\":1,\"depth\":0,\"bases\":[]} {\"trailing\":1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tp_store_manifest *m = NULL;
		int rc = parse(&m, bad[i]);
		if (rc == 0)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK(rc != 0);
		CHECK(m == NULL);
	}
	/* Too many bases is refused before anything large is allocated. */
	tp_buf big = TP_BUF_INIT(1 << 20);
	tp_buf_adds(&big, "{\"format\":\"tenpak-object\",\"version\":1,\"codec\":\"tenpak-delta\","
			  "\"codec_version\":1,\"oid\":\"" OID1 "\",\"size\":1,\"depth\":1,\"bases\":[");
	for (int i = 0; i <= TP_STORE_MANIFEST_BASES_MAX; i++)
		tp_buf_addf(&big, "%s{\"oid\":\"" OID2 "\",\"size\":1}", i ? "," : "");
	tp_buf_adds(&big, "]}");
	tp_store_manifest *m = NULL;
	CHECK(parse(&m, big.ptr) != 0);
	tp_buf_free(&big);
	/* One base named twice: a reader that rebuilt each name would do work
	 * that doubles per level of such objects. */
	CHECK_EQ_INT(parse(&m, "{\"format\":\"tenpak-object\",\"version\":1,\"codec\":"
			   "\"tenpak-delta\",\"codec_version\":1,\"oid\":\"" OID1 "\",\"size\":1,"
			   "\"depth\":1,\"bases\":[{\"oid\":\"" OID2 "\",\"size\":1},"
			   "{\"oid\":\"" OID1 "\",\"size\":1},{\"oid\":\"" OID2 "\",\"size\":1}]}"),
		     TP_ECORRUPT);
	CHECK(strstr(tp_error_last(), "base " OID2 " is listed twice") != NULL);
	CHECK(m == NULL);
}

static void test_signing(void)
{
	tp_sign_key *k = NULL, *k2 = NULL, *loaded = NULL;
	char pub[TP_SIGN_PUBLIC_TEXT_MAX], pub2[TP_SIGN_PUBLIC_TEXT_MAX], sig[TP_SIGN_TEXT_MAX];
	CHECK_EQ_INT(tp_sign_key_generate(&k), 0);
	CHECK_EQ_INT(tp_sign_key_generate(&k2), 0);
	tp_sign_key_public(k, pub);
	tp_sign_key_public(k2, pub2);
	CHECK(strncmp(pub, "ed25519:", 8) == 0 && strcmp(pub, pub2) != 0);
	CHECK_EQ_INT(tp_sign(k, "hello", 5, sig), 0);
	CHECK_EQ_INT(tp_sign_verify(pub, "hello", 5, sig), 0);
	CHECK_EQ_INT(tp_sign_verify(pub, "hellO", 5, sig), TP_EAUTH);
	CHECK_EQ_INT(tp_sign_verify(pub2, "hello", 5, sig), TP_EAUTH);
	CHECK_EQ_INT(tp_sign_verify("rsa:xyz", "hello", 5, sig), TP_EINVAL);
	CHECK_EQ_INT(tp_sign_verify(pub, "hello", 5, "not base64!"), TP_EINVAL);

	char dir[] = "/tmp/tp-test-sign-XXXXXX", path[64];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/key", dir);
	CHECK_EQ_INT(tp_sign_key_save(k, path), 0);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(tp_sign_key_save(k, path) != 0); /* never overwrites */
	CHECK_EQ_INT(tp_sign_key_load(&loaded, path), 0);
	tp_sign_key_public(loaded, pub2);
	CHECK_STR(pub2, pub);
	chmod(path, 0644);
	tp_sign_key_free(loaded);
	loaded = NULL;
	CHECK_EQ_INT(tp_sign_key_load(&loaded, path), TP_EAUTH);
	unlink(path);
	rmdir(dir);
	tp_sign_key_free(k);
	tp_sign_key_free(k2);
}

int main(void)
{
	TP_TEST_RUN(test_round_trip);
	TP_TEST_RUN(test_hostile);
	TP_TEST_RUN(test_signing);
	return TP_TEST_RESULT();
}
