// The extern "C" surface: converts C structs to the C++ types and every exception to a status plus a one-line
// message in a thread-local buffer, so nothing thrown inside the library crosses the C ABI.
#include "fastadasp_runtime.h"

#include "errors.h"
#include "runtime.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#ifndef FASTADASP_RUNTIME_VERSION
#define FASTADASP_RUNTIME_VERSION "0.0.0"
#endif

struct fastadasp_runtime
{
    std::unique_ptr<fastadasp::Runtime> impl;
};

struct fastadasp_result
{
    fastadasp::GenerationResult impl;
};

namespace
{

thread_local std::string gLastError;

fastadasp_status fail(fastadasp_status status, std::string const& message)
{
    gLastError = message;
    return status;
}

// Runs `body`, mapping exceptions onto statuses.
template <typename Body>
fastadasp_status guarded(Body&& body) noexcept
{
    try
    {
        gLastError.clear();
        body();
        return FASTADASP_OK;
    }
    catch (fastadasp::Error const& e)
    {
        return fail(static_cast<fastadasp_status>(e.status()), e.what());
    }
    catch (std::bad_alloc const&)
    {
        return fail(FASTADASP_ERROR_INTERNAL, "out of host memory");
    }
    catch (std::exception const& e)
    {
        return fail(FASTADASP_ERROR_INTERNAL, std::string("internal error: ") + e.what());
    }
    catch (...)
    {
        return fail(FASTADASP_ERROR_INTERNAL, "internal error (unknown exception)");
    }
}

std::string text(char const* value)
{
    return value ? std::string(value) : std::string();
}

void require(bool condition, char const* message)
{
    if (!condition)
    {
        throw fastadasp::Error(fastadasp::Status::kInvalidArgument, message);
    }
}

} // namespace

extern "C" {

void fastadasp_options_init(fastadasp_options* options)
{
    if (!options)
    {
        return;
    }
    std::memset(options, 0, sizeof(*options));
    options->executor = FASTADASP_EXECUTOR_TENSORRT;
    options->verify_hashes = 1;
    options->kv_in_place = 1;
}

fastadasp_status fastadasp_create(fastadasp_options const* options, fastadasp_runtime** out)
{
    if (out)
    {
        *out = nullptr;
    }
    return guarded([&] {
        require(options != nullptr && out != nullptr, "fastadasp_create needs options and an out pointer");
        require(options->export_dir != nullptr, "options.export_dir is required (a directory written by export-engine)");
        require(options->executor >= FASTADASP_EXECUTOR_TENSORRT && options->executor <= FASTADASP_EXECUTOR_FAKE,
            "options.executor must be FASTADASP_EXECUTOR_TENSORRT, _NONE or _FAKE");
        fastadasp::RuntimeOptions o;
        o.exportDir = options->export_dir;
        o.executor = static_cast<fastadasp::ExecutorKind>(options->executor);
        o.engineKey = text(options->engine_key);
        o.pluginLibrary = text(options->plugin_library);
        o.assumeComputeCapability = text(options->assume_compute_capability);
        o.assumeTensorRTVersion = text(options->assume_tensorrt_version);
        o.device = options->device;
        o.verifyHashes = options->verify_hashes != 0;
        o.kvInPlace = options->kv_in_place != 0;
        o.fakeSeed = options->fake_seed;
        auto handle = std::make_unique<fastadasp_runtime>();
        handle->impl = fastadasp::Runtime::open(o);
        *out = handle.release();
    });
}

void fastadasp_destroy(fastadasp_runtime* runtime)
{
    delete runtime;
}

char const* fastadasp_last_error(void)
{
    return gLastError.c_str();
}

char const* fastadasp_runtime_version(void)
{
    return FASTADASP_RUNTIME_VERSION;
}

int32_t fastadasp_runtime_has_tensorrt(void)
{
    return fastadasp::builtWithTensorRT() ? 1 : 0;
}

fastadasp_status fastadasp_model(fastadasp_runtime const* runtime, fastadasp_model_info* out)
{
    return guarded([&] {
        require(runtime != nullptr && out != nullptr, "fastadasp_model needs a runtime and an out pointer");
        fastadasp::Manifest const& m = runtime->impl->manifest();
        fastadasp::ModelArgs const& a = m.model.args;
        out->num_layers = static_cast<int32_t>(a.numLayers);
        out->hidden_size = static_cast<int32_t>(a.hiddenSize);
        out->vocab_size = static_cast<int32_t>(a.vocabSize);
        out->num_kv_heads = static_cast<int32_t>(a.numKvHeads);
        out->head_dim = static_cast<int32_t>(a.headDim);
        out->prompt_lora = m.model.promptLora ? 1 : 0;
        out->audio_tokens_min = static_cast<int32_t>(m.audioTokensRange.min);
        out->audio_tokens_max = static_cast<int32_t>(m.audioTokensRange.max);
        out->max_batch = static_cast<int32_t>(m.limits.maxBatch);
        out->max_text_tokens = static_cast<int32_t>(m.limits.maxTextTokens);
        out->max_new_tokens = static_cast<int32_t>(m.limits.maxNewTokens);
        out->max_position_embeddings = static_cast<int32_t>(a.maxPositionEmbeddings);
    });
}

char const* fastadasp_engine_key(fastadasp_runtime const* runtime)
{
    if (!runtime || !runtime->impl->engine().entry)
    {
        return "";
    }
    return runtime->impl->engine().entry->key.c_str();
}

fastadasp_status fastadasp_plan_json(
    fastadasp_runtime const* runtime, fastadasp_request_shape const* shape, char** json_out)
{
    if (json_out)
    {
        *json_out = nullptr;
    }
    return guarded([&] {
        require(runtime != nullptr && shape != nullptr && json_out != nullptr,
            "fastadasp_plan_json needs a runtime, a request shape and an out pointer");
        fastadasp::RequestShape s{shape->batch, shape->num_beams, shape->prefix_tokens, shape->audio_tokens,
            shape->suffix_tokens, shape->max_new_tokens};
        std::string json = runtime->impl->planJson(s);
        char* copy = static_cast<char*>(std::malloc(json.size() + 1));
        if (!copy)
        {
            throw std::bad_alloc();
        }
        std::memcpy(copy, json.c_str(), json.size() + 1);
        *json_out = copy;
    });
}

void fastadasp_free_string(char* text)
{
    std::free(text);
}

void fastadasp_generation_config_init(fastadasp_generation_config* config)
{
    if (!config)
    {
        return;
    }
    std::memset(config, 0, sizeof(*config));
    config->max_new_tokens = 32;
    config->num_beams = 1;
    config->length_penalty = 1.0;
    config->early_stopping = FASTADASP_EARLY_STOPPING_FALSE;
}

fastadasp_status fastadasp_generate(fastadasp_runtime* runtime, fastadasp_request const* request,
    fastadasp_generation_config const* config, fastadasp_result** out)
{
    if (out)
    {
        *out = nullptr;
    }
    return guarded([&] {
        require(runtime != nullptr && request != nullptr && config != nullptr && out != nullptr,
            "fastadasp_generate needs a runtime, a request, a generation config and an out pointer");
        require(config->num_eos_token_ids >= 0 && (config->num_eos_token_ids == 0 || config->eos_token_ids != nullptr),
            "generation config: eos_token_ids is NULL but num_eos_token_ids > 0");
        require(config->early_stopping >= FASTADASP_EARLY_STOPPING_FALSE
                && config->early_stopping <= FASTADASP_EARLY_STOPPING_NEVER,
            "generation config: early_stopping must be FALSE, TRUE or NEVER");
        fastadasp::GenerationConfig c;
        c.maxNewTokens = config->max_new_tokens;
        c.numBeams = config->num_beams;
        c.eosTokenIds.assign(config->eos_token_ids, config->eos_token_ids + config->num_eos_token_ids);
        c.hasPadTokenId = config->has_pad_token_id != 0;
        c.padTokenId = config->pad_token_id;
        c.lengthPenalty = config->length_penalty;
        c.earlyStopping = static_cast<fastadasp::EarlyStopping>(config->early_stopping);

        fastadasp::PrefillBatch b;
        b.batch = request->batch;
        b.prefixTokens = request->prefix_tokens;
        b.audioTokens = request->audio_tokens;
        b.suffixTokens = request->suffix_tokens;
        b.hiddenSize = runtime->impl->manifest().model.args.hiddenSize;
        b.prefixIds = request->prefix_ids;
        b.audioEmbeds = request->audio_embeds;
        b.suffixIds = request->suffix_ids;
        b.loraScale = request->lora_scale;
        auto result = std::make_unique<fastadasp_result>();
        result->impl = runtime->impl->generate(b, c);
        *out = result.release();
    });
}

int32_t fastadasp_result_rows(fastadasp_result const* result)
{
    return result ? static_cast<int32_t>(result->impl.rows) : 0;
}

int32_t fastadasp_result_length(fastadasp_result const* result)
{
    return result ? static_cast<int32_t>(result->impl.length) : 0;
}

int64_t const* fastadasp_result_tokens(fastadasp_result const* result)
{
    return result ? result->impl.tokens.data() : nullptr;
}

float const* fastadasp_result_scores(fastadasp_result const* result)
{
    return (result && !result->impl.scores.empty()) ? result->impl.scores.data() : nullptr;
}

double fastadasp_result_prefill_ms(fastadasp_result const* result)
{
    return result ? result->impl.prefillMs : 0.0;
}

double fastadasp_result_decode_ms(fastadasp_result const* result)
{
    return result ? result->impl.decodeMs : 0.0;
}

int32_t fastadasp_result_decode_steps(fastadasp_result const* result)
{
    return result ? static_cast<int32_t>(result->impl.decodeSteps) : 0;
}

void fastadasp_result_free(fastadasp_result* result)
{
    delete result;
}

} // extern "C"
