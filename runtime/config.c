/* config.json of a Hugging Face causal LM. */
#include "runtime_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Dimensions beyond this are not a model we can hold anyway. */
#define DIM_MAX (1u << 24)

/* A positive integer field; absent uses def (0: required). */
static int get_dim(const cJSON *root, const char *key, size_t def, size_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v || cJSON_IsNull(v)) {
		if (!def)
			return tp_error_set(TP_ECONFIG, "config.json: missing %s", key);
		*out = def;
		return 0;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > DIM_MAX ||
	    v->valuedouble != floor(v->valuedouble))
		return tp_error_set(TP_ECONFIG, "config.json: bad %s", key);
	*out = (size_t)v->valuedouble;
	return 0;
}

static double get_num(const cJSON *root, const char *key, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static bool get_bool(const cJSON *root, const char *key, bool def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* A token id: a number, the first of a list, or -1 for null/absent. */
static int64_t get_token_id(const cJSON *root, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (cJSON_IsArray(v))
		v = cJSON_GetArrayItem(v, 0);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > INT32_MAX)
		return -1;
	return (int64_t)v->valuedouble;
}

static int parse_arch(const cJSON *root, tp_model_config *c)
{
	static const struct { const char *name; tp_arch arch; } known[] = {
		{ "LlamaForCausalLM", TP_ARCH_LLAMA },
		{ "MistralForCausalLM", TP_ARCH_MISTRAL },
		{ "Qwen2ForCausalLM", TP_ARCH_QWEN2 },
	};
	const cJSON *a = cJSON_GetArrayItem(
		cJSON_GetObjectItemCaseSensitive(root, "architectures"), 0);
	if (!cJSON_IsString(a))
		return tp_error_set(TP_ECONFIG, "config.json: no architectures");
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(a->valuestring, known[i].name) == 0) {
			c->arch = known[i].arch;
			return 0;
		}
	return tp_error_set(TP_EUNSUPPORTED, "architecture %s is not supported "
			    "(Llama, Mistral and Qwen2 causal LMs are)", a->valuestring);
}

/* rope_scaling "llama3": the wavelength band it blends between. */
static int parse_rope_llama3(const cJSON *rs, tp_model_config *c)
{
	c->rope_scaling = TP_ROPE_SCALING_LLAMA3;
	c->rope_low_freq_factor = get_num(rs, "low_freq_factor", 0);
	c->rope_high_freq_factor = get_num(rs, "high_freq_factor", 0);
	c->rope_original_max = get_num(rs, "original_max_position_embeddings", 0);
	if (!(c->rope_low_freq_factor > 0) ||
	    !(c->rope_high_freq_factor > c->rope_low_freq_factor) || !(c->rope_original_max > 0))
		return tp_error_set(TP_ECONFIG, "config.json: bad llama3 rope_scaling");
	return 0;
}

/* transformers < 5 writes rope_theta and rope_scaling; 5 writes both
 * inside rope_parameters (rope_type "default" when unscaled). */
static int parse_rope(const cJSON *root, tp_model_config *c)
{
	const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
	c->rope_theta = get_num(rs, "rope_theta", get_num(root, "rope_theta", 10000.0));
	c->rope_factor = 1.0;
	if (!cJSON_IsObject(rs))
		rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
	if (!rs || cJSON_IsNull(rs))
		return 0;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
	if (!cJSON_IsString(type))
		type = cJSON_GetObjectItemCaseSensitive(rs, "type");
	if (!cJSON_IsString(type))
		return tp_error_set(TP_ECONFIG, "config.json: rope_scaling without a type");
	if (strcmp(type->valuestring, "default") == 0)
		return 0;
	c->rope_factor = get_num(rs, "factor", 0);
	if (!(c->rope_factor > 0))
		return tp_error_set(TP_ECONFIG, "config.json: bad rope_scaling factor");
	if (strcmp(type->valuestring, "linear") == 0) {
		c->rope_scaling = TP_ROPE_SCALING_LINEAR;
		return 0;
	}
	if (strcmp(type->valuestring, "llama3") == 0)
		return parse_rope_llama3(rs, c);
	return tp_error_set(TP_EUNSUPPORTED, "rope_scaling type %s is not supported "
			    "(linear and llama3 are)", type->valuestring);
}

static int parse_dims(const cJSON *root, tp_model_config *c)
{
	int rc;
	if ((rc = get_dim(root, "hidden_size", 0, &c->hidden)) < 0 ||
	    (rc = get_dim(root, "intermediate_size", 0, &c->intermediate)) < 0 ||
	    (rc = get_dim(root, "num_hidden_layers", 0, &c->layers)) < 0 ||
	    (rc = get_dim(root, "num_attention_heads", 0, &c->heads)) < 0 ||
	    (rc = get_dim(root, "num_key_value_heads", c->heads, &c->kv_heads)) < 0 ||
	    (rc = get_dim(root, "head_dim", c->hidden / c->heads ? c->hidden / c->heads : 1,
			  &c->head_dim)) < 0 ||
	    (rc = get_dim(root, "vocab_size", 0, &c->vocab)) < 0)
		return rc;
	if (c->heads % c->kv_heads != 0)
		return tp_error_set(TP_ECONFIG, "config.json: %zu heads not a multiple of %zu "
				    "key/value heads", c->heads, c->kv_heads);
	if (c->head_dim % 2 != 0 || c->heads * c->head_dim > DIM_MAX)
		return tp_error_set(TP_ECONFIG, "config.json: bad head_dim %zu", c->head_dim);
	if (c->layers > 4096)
		return tp_error_set(TP_ECONFIG, "config.json: %zu layers", c->layers);
	if (get_dim(root, "max_position_embeddings", 1, &c->max_positions) < 0)
		c->max_positions = 0;
	return 0;
}

int tp_model_config_parse(tp_model_config *out, const char *json, size_t len)
{
	tp_model_config c = { 0 };
	int rc;
	cJSON *root = cJSON_ParseWithLength(json, len);
	if (!cJSON_IsObject(root)) {
		rc = tp_error_set(TP_ECONFIG, "config.json is not a JSON object");
		goto done;
	}
	if ((rc = parse_arch(root, &c)) < 0 || (rc = parse_dims(root, &c)) < 0 ||
	    (rc = parse_rope(root, &c)) < 0)
		goto done;
	c.rms_eps = get_num(root, "rms_norm_eps", 1e-6);
	c.tie_embeddings = get_bool(root, "tie_word_embeddings", false);
	bool attn_bias = get_bool(root, "attention_bias", false);
	c.qkv_bias = c.arch == TP_ARCH_QWEN2 || (c.arch == TP_ARCH_LLAMA && attn_bias);
	c.out_bias = c.arch == TP_ARCH_LLAMA && attn_bias;
	c.bos_id = get_token_id(root, "bos_token_id");
	c.eos_id = get_token_id(root, "eos_token_id");
	size_t win = 0;
	/* Qwen2 ships a sliding_window it does not use unless asked to. */
	if ((c.arch == TP_ARCH_MISTRAL || get_bool(root, "use_sliding_window", false)) &&
	    get_dim(root, "sliding_window", 1, &win) == 0 && win > 1)
		c.sliding_window = win;
	if (get_bool(root, "mlp_bias", false)) {
		rc = tp_error_set(TP_EUNSUPPORTED, "config.json: mlp_bias is not supported");
		goto done;
	}
	const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
	if (cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0) {
		rc = tp_error_set(TP_EUNSUPPORTED, "hidden_act %s is not supported (silu is)",
				  act->valuestring);
		goto done;
	}
	*out = c;
done:
	cJSON_Delete(root);
	return rc;
}
