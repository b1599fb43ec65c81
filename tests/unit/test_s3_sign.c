/* AWS Signature V4 against AWS's published examples. */
#include <string.h>

#include "store_internal.h"
#include "tp_test.h"

#define EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char *signature_of(const tp_buf *auth)
{
	const char *p = auth->ptr ? strstr(auth->ptr, "Signature=") : NULL;
	return p ? p + 10 : "";
}

/* Sign r and check the signature; the Authorization value goes to auth. */
static void check_signature(const tp_s3_signer *s, const tp_s3_request_desc *r,
			    const char *expected, tp_buf *auth)
{
	CHECK_EQ_INT(tp_s3_sign(s, r, auth), 0);
	CHECK_STR(signature_of(auth), expected);
}

/* S3 API reference, "Example: GET Object" (bytes 0-9 of test.txt). */
static void test_s3_get_object(void)
{
	tp_s3_signer s = { "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
			   "us-east-1", "s3" };
	tp_s3_header h[] = {
		{ "x-amz-date", "20130524T000000Z" },
		{ "range", "bytes=0-9" },
		{ "host", "examplebucket.s3.amazonaws.com" },
		{ "x-amz-content-sha256", EMPTY },
	};
	tp_s3_request_desc r = { "GET", "/test.txt", "", h, 4, EMPTY, "20130524T000000Z" };
	tp_buf auth = TP_BUF_INIT(4096);
	check_signature(&s, &r, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", &auth);
	CHECK(strncmp(auth.ptr, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
				"us-east-1/s3/aws4_request, SignedHeaders=host;range;"
				"x-amz-content-sha256;x-amz-date, Signature=", 150) == 0);
	tp_buf_free(&auth);
}

/* S3 API reference, "Example: GET Bucket (List Objects)". */
static void test_s3_list_objects(void)
{
	tp_s3_signer s = { "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
			   "us-east-1", "s3" };
	tp_s3_header h[] = {
		{ "host", "examplebucket.s3.amazonaws.com" },
		{ "x-amz-content-sha256", EMPTY },
		{ "x-amz-date", "20130524T000000Z" },
	};
	tp_s3_request_desc r = { "GET", "/", "max-keys=2&prefix=J", h, 3, EMPTY, "20130524T000000Z" };
	tp_buf auth = TP_BUF_INIT(4096);
	check_signature(&s, &r, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7", &auth);
	tp_buf_free(&auth);
}

/* SigV4 test suite, "get-vanilla" (service "service"). */
static void test_get_vanilla(void)
{
	tp_s3_signer s = { "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1",
			   "service" };
	tp_s3_header h[] = {
		{ "host", "example.amazonaws.com" },
		{ "x-amz-date", "20150830T123600Z" },
	};
	tp_s3_request_desc r = { "GET", "/", "", h, 2, EMPTY, "20150830T123600Z" };
	tp_buf auth = TP_BUF_INIT(4096);
	check_signature(&s, &r, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", &auth);
	tp_buf_free(&auth);
}

static void test_uri_encode(void)
{
	tp_buf b = TP_BUF_INIT(1024);
	CHECK_EQ_INT(tp_s3_uri_encode(&b, "/bucket/a b/c~d_e.f-g$h", true), 0);
	CHECK_STR(b.ptr, "/bucket/a%20b/c~d_e.f-g%24h");
	tp_buf_reset(&b);
	CHECK_EQ_INT(tp_s3_uri_encode(&b, "x/y=z+", false), 0);
	CHECK_STR(b.ptr, "x%2Fy%3Dz%2B");
	tp_buf_free(&b);
}

static void test_bad_date(void)
{
	tp_s3_signer s = { "A", "B", "us-east-1", "s3" };
	tp_s3_request_desc r = { "GET", "/", "", NULL, 0, EMPTY, "2013" };
	tp_buf auth = TP_BUF_INIT(4096);
	CHECK_EQ_INT(tp_s3_sign(&s, &r, &auth), TP_EINVAL);
	tp_buf_free(&auth);
}

int main(void)
{
	TP_TEST_RUN(test_s3_get_object);
	TP_TEST_RUN(test_s3_list_objects);
	TP_TEST_RUN(test_get_vanilla);
	TP_TEST_RUN(test_uri_encode);
	TP_TEST_RUN(test_bad_date);
	return TP_TEST_RESULT();
}
