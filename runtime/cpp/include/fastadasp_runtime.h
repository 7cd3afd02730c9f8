/*
 * fastadasp_runtime: run a fastadasp export (manifest.json + TensorRT engines) from any language.
 *
 * A service opens an export directory once, then per request calls
 *     fastadasp_generate   (prefill + greedy / beam decode on the GPU)
 *     fastadasp_result_*   (read the token ids)
 *     fastadasp_result_free
 * fastadasp_plan_json shows what a request would allocate (per-layer KV lengths, capacities, bytes) without
 * running anything; it also works on machines without a GPU (executor FASTADASP_EXECUTOR_NONE).
 *
 * Conventions: every function that can fail returns a fastadasp_status; on failure
 * fastadasp_last_error() holds a one-line message (per thread) naming the value, file or limit and the fix. No
 * C++ exception crosses this interface. A runtime handle runs one request at a time (calls on one handle are
 * serialised); open one handle per concurrent stream of requests.
 */
#ifndef FASTADASP_RUNTIME_H
#define FASTADASP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define FASTADASP_API __declspec(dllexport)
#else
#define FASTADASP_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FASTADASP_RUNTIME_ABI_VERSION 1

typedef enum fastadasp_status
{
    FASTADASP_OK = 0,
    FASTADASP_ERROR_INVALID_ARGUMENT = 1, /* a bad option or request value */
    FASTADASP_ERROR_MANIFEST = 2,         /* missing / other-version manifest, missing key, file that does not hash */
    FASTADASP_ERROR_NO_ENGINE = 3,        /* no engine for this GPU and TensorRT (the message lists what there is) */
    FASTADASP_ERROR_LIMITS = 4,           /* the request exceeds the export's serving limits or engine profiles */
    FASTADASP_ERROR_UNAVAILABLE = 5,      /* built without TensorRT, no CUDA device, planning-only handle */
    FASTADASP_ERROR_BACKEND = 6,          /* TensorRT or CUDA failed while running */
    FASTADASP_ERROR_INTERNAL = 7
} fastadasp_status;

typedef enum fastadasp_executor_kind
{
    FASTADASP_EXECUTOR_TENSORRT = 0, /* the engines for this GPU (needs a build with TensorRT, and a GPU) */
    FASTADASP_EXECUTOR_NONE = 1,     /* planning only: manifest, engine choice, KV plan; generate fails */
    FASTADASP_EXECUTOR_FAKE = 2      /* deterministic pseudo-logits, no GPU: for testing a service's plumbing */
} fastadasp_executor_kind;

typedef enum fastadasp_early_stopping
{
    FASTADASP_EARLY_STOPPING_FALSE = 0, /* Hugging Face's default heuristic */
    FASTADASP_EARLY_STOPPING_TRUE = 1,
    FASTADASP_EARLY_STOPPING_NEVER = 2
} fastadasp_early_stopping;

typedef struct fastadasp_options
{
    const char* export_dir;              /* directory written by export-engine (required) */
    int32_t executor;                    /* fastadasp_executor_kind */
    const char* engine_key;              /* NULL: the manifest entry for this GPU and TensorRT version */
    const char* plugin_library;          /* NULL: the WeightedMerge library path the manifest records */
    const char* assume_compute_capability; /* planning without a GPU: choose the entry as if on this GPU ("9.0") */
    const char* assume_tensorrt_version;   /* ... and this TensorRT ("10.14.1") */
    int32_t device;                      /* CUDA device ordinal */
    int32_t verify_hashes;               /* 1: check the engines' SHA-256 against the manifest before loading */
    int32_t kv_in_place;                 /* 1: decode's present.{i} bound to the past.{i} buffer (written in place);
                                            0: written into a second buffer, swapped each step */
    uint64_t fake_seed;                  /* FASTADASP_EXECUTOR_FAKE only */
} fastadasp_options;

/* Defaults: executor TENSORRT, device 0, verify_hashes 1, kv_in_place 1, everything else NULL / 0. */
FASTADASP_API void fastadasp_options_init(fastadasp_options* options);

typedef struct fastadasp_runtime fastadasp_runtime;

/* Reads and checks the manifest, chooses the engine entry, loads the plugin library and deserialises the engines
 * (TENSORRT). On failure *out is NULL. */
FASTADASP_API fastadasp_status fastadasp_create(const fastadasp_options* options, fastadasp_runtime** out);
FASTADASP_API void fastadasp_destroy(fastadasp_runtime* runtime);

/* The message of the last failed call on this thread ("" when none). Valid until the next call on this thread. */
FASTADASP_API const char* fastadasp_last_error(void);

/* The library's version ("0.2.0") and whether it was built with the TensorRT executor. */
FASTADASP_API const char* fastadasp_runtime_version(void);
FASTADASP_API int32_t fastadasp_runtime_has_tensorrt(void);

typedef struct fastadasp_model_info
{
    int32_t num_layers;
    int32_t hidden_size;  /* D of audio_embeds [B, N, D] and lora_scale [B, D] */
    int32_t vocab_size;
    int32_t num_kv_heads;
    int32_t head_dim;
    int32_t prompt_lora;  /* 1: requests must carry lora_scale */
    int32_t audio_tokens_min, audio_tokens_max;
    int32_t max_batch, max_text_tokens, max_new_tokens; /* the export's serving limits */
    int32_t max_position_embeddings;
} fastadasp_model_info;

FASTADASP_API fastadasp_status fastadasp_model(const fastadasp_runtime* runtime, fastadasp_model_info* out);

/* The manifest.engines key of the engines this handle runs (or would run); "" when none was chosen. */
FASTADASP_API const char* fastadasp_engine_key(const fastadasp_runtime* runtime);

typedef struct fastadasp_request_shape
{
    int32_t batch;
    int32_t num_beams;
    int32_t prefix_tokens; /* P */
    int32_t audio_tokens;  /* N */
    int32_t suffix_tokens; /* S */
    int32_t max_new_tokens;
} fastadasp_request_shape;

/* A JSON report (manifest summary, engine choice, per-layer n[i], T[i], C[i], KV bytes) for a request of this
 * shape, checked against the serving limits. Free *json_out with fastadasp_free_string. */
FASTADASP_API fastadasp_status fastadasp_plan_json(
    const fastadasp_runtime* runtime, const fastadasp_request_shape* shape, char** json_out);
FASTADASP_API void fastadasp_free_string(char* text);

typedef struct fastadasp_request
{
    int32_t batch;
    int32_t prefix_tokens, audio_tokens, suffix_tokens;
    const int64_t* prefix_ids;  /* [batch, prefix_tokens] */
    const float* audio_embeds;  /* [batch, audio_tokens, hidden_size], float32 (converted to the engine's precision) */
    const int64_t* suffix_ids;  /* [batch, suffix_tokens] */
    const float* lora_scale;    /* [batch, hidden_size] when fastadasp_model_info.prompt_lora, else NULL */
} fastadasp_request;

typedef struct fastadasp_generation_config
{
    int32_t max_new_tokens;
    int32_t num_beams;            /* 1: greedy */
    const int64_t* eos_token_ids; /* may be NULL */
    int32_t num_eos_token_ids;
    int32_t has_pad_token_id;
    int64_t pad_token_id;
    double length_penalty;
    int32_t early_stopping;       /* fastadasp_early_stopping */
} fastadasp_generation_config;

/* Defaults: 32 new tokens, greedy, no EOS, no pad, length penalty 1.0, early stopping FALSE. */
FASTADASP_API void fastadasp_generation_config_init(fastadasp_generation_config* config);

typedef struct fastadasp_result fastadasp_result;

FASTADASP_API fastadasp_status fastadasp_generate(fastadasp_runtime* runtime, const fastadasp_request* request,
    const fastadasp_generation_config* config, fastadasp_result** out);

FASTADASP_API int32_t fastadasp_result_rows(const fastadasp_result* result);   /* = request batch */
FASTADASP_API int32_t fastadasp_result_length(const fastadasp_result* result); /* tokens per row */
/* [rows, length] row-major: generated tokens only (a row that ended early is padded with pad / EOS). */
FASTADASP_API const int64_t* fastadasp_result_tokens(const fastadasp_result* result);
/* Beam search: the returned hypothesis' score per row; NULL for greedy. */
FASTADASP_API const float* fastadasp_result_scores(const fastadasp_result* result);
FASTADASP_API double fastadasp_result_prefill_ms(const fastadasp_result* result);
FASTADASP_API double fastadasp_result_decode_ms(const fastadasp_result* result);
FASTADASP_API int32_t fastadasp_result_decode_steps(const fastadasp_result* result);
FASTADASP_API void fastadasp_result_free(fastadasp_result* result);

#ifdef __cplusplus
}
#endif

#endif /* FASTADASP_RUNTIME_H */
