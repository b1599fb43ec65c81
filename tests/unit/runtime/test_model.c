/* Forward pass against the PyTorch log-probabilities of the fixture model. */
#include "../tp_test.h"
#include "evaltest.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *data_dir, *shared_dir;

/* Largest |error| of our log-probs for the reference file's two sequences. */
static double logprob_error(tp_model *m, const char *ref_path, double *rel_out)
{
	size_t nids = 0, nlp = 0, V = tp_model_get_config(m)->vocab;
	float *ids_f = tpt_read_f32(ref_path, "ids", &nids);
	float *ref = tpt_read_f32(ref_path, "logprobs", &nlp);
	float *lg = malloc(64 * V * sizeof(float));
	tp_kv *kv = NULL;
	double worst = INFINITY, worst_rel = INFINITY;
	if (!ids_f || !ref || !lg || nids != 128 || nlp != 128 * V || tp_kv_new(&kv, m, 64, 64) < 0)
		goto done;
	worst = worst_rel = 0;
	for (size_t s = 0; s < 2; s++) {
		int32_t ids[64];
		for (size_t i = 0; i < 64; i++)
			ids[i] = (int32_t)ids_f[s * 64 + i];
		tp_kv_reset(kv);
		if (tp_model_forward(m, kv, ids, 64, 0, lg) < 0) {
			worst = INFINITY;
			goto done;
		}
		for (size_t i = 0; i < 64; i++) {
			tp_runtime_log_softmax(lg + i * V, V, lg + i * V);
			for (size_t v = 0; v < V; v++) {
				double want = ref[(s * 64 + i) * V + v], got = lg[i * V + v];
				double e = fabs(got - want), r = e / fmax(1.0, fabs(want));
				worst = e > worst ? e : worst;
				worst_rel = r > worst_rel ? r : worst_rel;
			}
		}
	}
done:
	tp_kv_free(kv);
	free(ids_f);
	free(ref);
	free(lg);
	*rel_out = worst_rel;
	return worst;
}

/* Relative error, scaled by max(1, |log p|), allowed against PyTorch. */
#define LOGPROB_TOL 2e-5

static void check_logprobs(tp_model *m, const char *ref_path, const char *what)
{
	double rel, err = logprob_error(m, ref_path, &rel);
	fprintf(stderr, "   %-22s max |logprob error| %.3g (relative %.3g)\n", what, err, rel);
	CHECK(rel < LOGPROB_TOL);
}

static void test_repo_logprobs(void)
{
	const char *variants[] = { "base", "full_ft" };
	for (size_t i = 0; i < 2; i++) {
		tp_model *m = tpt_repo_model(data_dir, variants[i], 2);
		CHECK(m != NULL);
		if (!m)
			continue;
		check_logprobs(m, tpt_path("%s/eval/logprobs_%s_BF16.safetensors", data_dir,
					   variants[i]), tpt_path("%s/BF16", variants[i]));
		tp_model_free(m);
	}
}

/* Every dtype of the shared fixtures. */
static void test_shared_logprobs(void)
{
	const char *variants[] = { "base", "full_ft" }, *dtypes[] = { "F32", "F16", "BF16" };
	for (size_t i = 0; i < 2; i++)
		for (size_t d = 0; d < 3; d++) {
			tp_model *m = NULL;
			tp_model_opts o = { .threads = 2 };
			CHECK_EQ_INT(tp_model_load(&m, tpt_path("%s/models/%s/%s", shared_dir,
								 variants[i], dtypes[d]), &o), 0);
			if (!m)
				continue;
			check_logprobs(m, tpt_path("%s/eval/logprobs_%s_%s.safetensors", shared_dir,
						   variants[i], dtypes[d]),
				       tpt_path("%s/%s", variants[i], dtypes[d]));
			tp_model_free(m);
		}
}

/* Decoding one token at a time with the cache equals one batched pass,
 * and the portable kernel agrees with the SIMD one. */
static void test_kv_cache_and_kernels(void)
{
	tp_model *m = tpt_repo_model(data_dir, "base", 2);
	size_t n = 0;
	int32_t *ids = tpt_heldout_ids(data_dir, &n);
	CHECK(m && ids && n >= 40);
	if (!m || !ids || n < 40)
		goto done;
	size_t V = tp_model_get_config(m)->vocab, T = 40;
	float *batch = malloc(T * V * sizeof(float)), *step = malloc(T * V * sizeof(float));
	float *port = malloc(T * V * sizeof(float));
	tp_kv *kv = NULL;
	CHECK_EQ_INT(tp_kv_new(&kv, m, T, 7), 0); /* batches of 7 exercise chunking */
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, T, 0, batch), 0);
	tp_kv_reset(kv);
	for (size_t i = 0; i < T; i++)
		CHECK_EQ_INT(tp_model_forward(m, kv, ids + i, 1, 0, step + i * V), 0);
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, 1, 0, step), TP_ETOOBIG);
	bool old = tp_matmul_force_portable(true);
	tp_kv_reset(kv);
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, T, 0, port), 0);
	tp_matmul_force_portable(old);
	double d_step = 0, d_port = 0;
	for (size_t i = 0; i < T * V; i++) {
		d_step = fmax(d_step, fabs(batch[i] - step[i]));
		d_port = fmax(d_port, fabs(batch[i] - port[i]));
	}
	fprintf(stderr, "   kernel %s: decode vs batch %.3g, portable vs it %.3g\n",
		tp_matmul_kernel(), d_step, d_port);
	CHECK(d_step < 1e-4);
	CHECK(d_port < 1e-4);
	/* logits for the tail only land at the start of the buffer */
	tp_kv_reset(kv);
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, T, T - 3, port), 0);
	CHECK(fabs(port[0] - batch[(T - 3) * V]) < 1e-4 && fabs(port[2 * V + 5] - batch[(T - 1) * V + 5]) < 1e-4);
	int32_t bad_id = 100000;
	tp_kv_reset(kv);
	CHECK_EQ_INT(tp_model_forward(m, kv, &bad_id, 1, 0, port), TP_EINVAL);
	tp_kv_free(kv);
	free(batch);
	free(step);
	free(port);
done:
	free(ids);
	tp_model_free(m);
}

/* A factory that counts layers and lets the default build them, and a
 * layer substituted after loading. */
static int count_layers(void *ctx, const char *name, const float *w, const float *bias,
			size_t out_dim, size_t in_dim, tp_linear **made)
{
	(void)name; (void)w; (void)bias; (void)out_dim; (void)in_dim; (void)made;
	(*(int *)ctx)++;
	return TP_ENOTFOUND;
}

static void count_task(void *ctx, size_t i, size_t n)
{
	int *hits = ctx;
	if (i < n)
		__atomic_fetch_add(&hits[i], 1, __ATOMIC_RELAXED);
}

/* Threads 0 means every online core (common's one count); a loop runs each
 * task exactly once, on a pool or inline. */
static void test_pool(void)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned cores = tp_cpu_count();
	CHECK(cores >= 1);
	if (online > 0)
		CHECK_EQ_INT(cores, online);
	tp_pool *p = NULL;
	CHECK_EQ_INT(tp_pool_new(&p, 0), 0);
	if (p)
		CHECK_EQ_INT(tp_pool_threads(p), cores > 256 ? 256 : cores);
	tp_pool_free(p);
	p = NULL;
	CHECK_EQ_INT(tp_pool_new(&p, 3), 0);
	tp_pool *pools[] = { p, NULL };
	for (size_t k = 0; k < 2; k++) {
		int hits[1000] = { 0 }, once = 0;
		tp_pool_run(pools[k], 1000, count_task, hits);
		for (size_t i = 0; i < 1000; i++)
			once += hits[i] == 1;
		CHECK_EQ_INT(once, 1000);
	}
	/* Back-to-back loops (the workers catch them spinning) and loops after a
	 * pause (the workers have gone to sleep): each still runs every task
	 * exactly once. */
	p = NULL;
	CHECK_EQ_INT(tp_pool_new(&p, 2), 0);
	int bad = 0;
	for (size_t r = 0; r < 3000; r++) {
		int hits[7] = { 0 };
		if (r % 500 == 499)
			nanosleep(&(struct timespec){ .tv_nsec = 20000000 }, NULL);
		tp_pool_run(p, 7, count_task, hits);
		for (size_t i = 0; i < 7; i++)
			bad += hits[i] != 1;
	}
	CHECK_EQ_INT(bad, 0);
	tp_pool_free(p);
}

/* A batch long enough that the per-token steps (norms, RoPE, SiLU, residual
 * adds) and attention are split across threads gives the same logits, bit
 * for bit, as one thread. */
static void test_threads_bit_identical(void)
{
	tp_model *m1 = tpt_repo_model(data_dir, "base", 1), *m2 = tpt_repo_model(data_dir, "base", 2);
	size_t n = 0;
	int32_t *ids = tpt_heldout_ids(data_dir, &n);
	size_t T = 128, V = m1 ? tp_model_get_config(m1)->vocab : 0;
	float *a = malloc(T * V * sizeof(float)), *b = malloc(T * V * sizeof(float));
	tp_kv *k1 = NULL, *k2 = NULL;
	CHECK(m1 && m2 && ids && n >= T && a && b);
	if (!m1 || !m2 || !ids || n < T || !a || !b)
		goto done;
	CHECK_EQ_INT(tp_kv_new(&k1, m1, T, T), 0);
	CHECK_EQ_INT(tp_kv_new(&k2, m2, T, T), 0);
	if (!k1 || !k2)
		goto done;
	CHECK_EQ_INT(tp_model_forward(m1, k1, ids, T, 0, a), 0);
	CHECK_EQ_INT(tp_model_forward(m2, k2, ids, T, 0, b), 0);
	CHECK(memcmp(a, b, T * V * sizeof(float)) == 0);
done:
	tp_kv_free(k1);
	tp_kv_free(k2);
	free(a);
	free(b);
	free(ids);
	tp_model_free(m1);
	tp_model_free(m2);
}

static void test_linear_interface(void)
{
	int calls = 0;
	tp_model *m = NULL;
	tp_model_opts o = { .threads = 1, .make_linear = count_layers, .make_linear_ctx = &calls,
			    .weights = tpt_path("%s/fixtures/base-bf16.safetensors", data_dir) };
	CHECK_EQ_INT(tp_model_load(&m, tpt_path("%s/eval", data_dir), &o), 0);
	if (!m)
		return;
	CHECK_EQ_INT(calls, 29);
	CHECK_EQ_INT(tp_model_linear_count(m), 29);
	CHECK_STR(tp_model_linear_name(m, 6), "model.layers.0.mlp.down_proj");
	CHECK_STR(tp_model_linear_name(m, 28), "lm_head");
	CHECK(tp_model_params(m) > 3000000 && tp_model_params(m) < 4000000);
	/* Zeroing the head makes every next token equally likely. */
	size_t V = 256, H = 256;
	float *zeros = calloc(V * H, sizeof(float)), lg[256];
	tp_linear *l = NULL, *wrong = NULL;
	CHECK_EQ_INT(tp_linear_dense_new(&l, zeros, NULL, V, H), 0);
	CHECK_EQ_INT(tp_linear_dense_new(&wrong, zeros, NULL, V - 1, H), 0);
	CHECK_EQ_INT(tp_model_set_linear(m, 28, wrong), TP_EINVAL);
	CHECK_EQ_INT(tp_model_set_linear(m, 28, l), 0);
	tp_kv *kv = NULL;
	int32_t id = 'a';
	CHECK_EQ_INT(tp_kv_new(&kv, m, 4, 4), 0);
	CHECK_EQ_INT(tp_model_forward(m, kv, &id, 1, 0, lg), 0);
	CHECK(lg[0] == 0 && lg[255] == 0);
	tp_kv_free(kv);
	tp_linear_free(wrong);
	free(zeros);
	tp_model_free(m);
}

static void test_config_errors(void)
{
	tp_model_config c;
	const char *bert = "{\"architectures\":[\"BertModel\"]}";
	const char *yarn = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,"
			   "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
			   "\"vocab_size\":10,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":2}}";
	const char *qwen = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":8,"
			   "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
			   "\"num_key_value_heads\":1,\"vocab_size\":10,\"tie_word_embeddings\":true,"
			   "\"sliding_window\":4,\"bos_token_id\":3,"
			   "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}";
	CHECK_EQ_INT(tp_model_config_parse(&c, bert, strlen(bert)), TP_EUNSUPPORTED);
	CHECK_EQ_INT(tp_model_config_parse(&c, yarn, strlen(yarn)), TP_EUNSUPPORTED);
	CHECK_EQ_INT(tp_model_config_parse(&c, qwen, strlen(qwen)), 0);
	CHECK(c.arch == TP_ARCH_QWEN2 && c.qkv_bias && !c.out_bias && c.tie_embeddings);
	CHECK(c.kv_heads == 1 && c.head_dim == 4 && c.rope_factor == 2 &&
	      c.rope_scaling == TP_ROPE_SCALING_LINEAR);
	CHECK(c.sliding_window == 0 && c.bos_id == 3);
	const char *l3 = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,"
			 "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
			 "\"vocab_size\":10,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":32,"
			 "\"low_freq_factor\":1,\"high_freq_factor\":4,"
			 "\"original_max_position_embeddings\":8192}}";
	CHECK_EQ_INT(tp_model_config_parse(&c, l3, strlen(l3)), 0);
	CHECK(c.rope_scaling == TP_ROPE_SCALING_LLAMA3 && c.rope_factor == 32 &&
	      c.rope_high_freq_factor == 4 && c.rope_original_max == 8192);
	/* transformers 5 spelling */
	const char *v5 = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,"
			 "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
			 "\"vocab_size\":10,\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":4,"
			 "\"rope_theta\":500000}}";
	CHECK_EQ_INT(tp_model_config_parse(&c, v5, strlen(v5)), 0);
	CHECK(c.rope_scaling == TP_ROPE_SCALING_LINEAR && c.rope_factor == 4 &&
	      c.rope_theta == 500000);
	tp_model *m = NULL;
	CHECK_EQ_INT(tp_model_load(&m, "/nonexistent", NULL), TP_ENOTFOUND);
}

/* config.json and tokenizer.json are read as regular files only: a FIFO
 * in their place (or a device) is refused, never waited on; and their
 * size caps hold. */
static void test_config_files(void)
{
	char dir[] = "/tmp/tp-runtime-test-XXXXXX";
	tp_model *m = NULL;
	tp_tokenizer *t = NULL;
	CHECK(mkdtemp(dir) != NULL);
	CHECK_EQ_INT(mkfifo(tpt_path("%s/config.json", dir), 0600), 0);
	CHECK_EQ_INT(mkfifo(tpt_path("%s/tokenizer.json", dir), 0600), 0);
	alarm(20); /* the old reader blocked here for a writer */
	CHECK_EQ_INT(tp_model_load(&m, dir, NULL), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "config.json is not a regular file") != NULL);
	CHECK_EQ_INT(tp_tokenizer_load(&t, tpt_path("%s/tokenizer.json", dir)), TP_EINVAL);
	alarm(0);
	CHECK(m == NULL && t == NULL);
	unlink(tpt_path("%s/config.json", dir));
	FILE *f = fopen(tpt_path("%s/config.json", dir), "wb");
	CHECK(f != NULL);
	for (size_t i = 0; f && i <= (4u << 20); i++)
		fputc(' ', f);
	if (f)
		fclose(f);
	CHECK_EQ_INT(tp_model_load(&m, dir, NULL), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "config.json is larger than 4194304 bytes") != NULL);
	unlink(tpt_path("%s/config.json", dir));
	unlink(tpt_path("%s/tokenizer.json", dir));
	rmdir(dir);
}

int main(int argc, char **argv)
{
	data_dir = argc > 1 ? argv[1] : "tests/data";
	shared_dir = argc > 2 ? argv[2] : NULL;
	/* With the shared fixtures' directory, only they are tested (a test of
	 * its own, skipped when that checkout is not next to ours). */
	if (shared_dir) {
		if (!tpt_have(tpt_path("%s/README.md", shared_dir), "shared fixtures"))
			return TPT_SKIP;
		TP_TEST_RUN(test_shared_logprobs);
		return TP_TEST_RESULT();
	}
	TP_TEST_RUN(test_repo_logprobs);
	TP_TEST_RUN(test_pool);
	TP_TEST_RUN(test_threads_bit_identical);
	TP_TEST_RUN(test_kv_cache_and_kernels);
	TP_TEST_RUN(test_linear_interface);
	TP_TEST_RUN(test_config_errors);
	TP_TEST_RUN(test_config_files);
	return TP_TEST_RESULT();
}
