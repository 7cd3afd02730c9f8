// fastadasp-run: the example program. It uses only the C API (include/fastadasp_runtime.h), as a service would.
//
//   fastadasp-run --export-dir DIR --audio-tokens N [--text-tokens P:S] [--max-new-tokens T] --dry-run
//       manifest summary, engine choice, per-layer audio tokens, KV lengths, capacities and bytes, as JSON; no GPU
//   fastadasp-run --export-dir DIR --audio-tokens N [--num-beams K] ...
//       runs the engines for this GPU on a synthetic request and prints token ids and timings as JSON
#include "fastadasp_runtime.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

char const* const kUsage =
    "usage: fastadasp-run --export-dir DIR --audio-tokens N [options]\n"
    "\n"
    "Plan (--dry-run) or run a fastadasp export's TensorRT engines on a synthetic request.\n"
    "\n"
    "  --export-dir DIR          directory written by export-engine (required)\n"
    "  --audio-tokens N          audio tokens of the request (required)\n"
    "  --text-tokens P:S         prefix and suffix text tokens (default 8:8)\n"
    "  --max-new-tokens T        decode budget (default 16)\n"
    "  --batch B                 requests in the batch (default 1)\n"
    "  --num-beams K             beam width, 1 = greedy (default 1)\n"
    "  --eos-token-id ID         end-of-sequence token (repeatable; default none)\n"
    "  --pad-token-id ID         padding after a row ends (default: the first EOS, else 0)\n"
    "  --length-penalty F        beam search length penalty (default 1.0)\n"
    "  --early-stopping MODE     false | true | never (default false)\n"
    "  --dry-run                 plan only: print the JSON report, run nothing (no GPU needed)\n"
    "  --executor KIND           tensorrt | fake (default tensorrt; fake = deterministic logits, no GPU)\n"
    "  --engine KEY              manifest.engines entry to use (default: the one for this GPU)\n"
    "  --plugin-library PATH     WeightedMerge plugin library (default: the path manifest.json records)\n"
    "  --compute-capability X.Y  dry run: choose the engine as if on this GPU\n"
    "  --tensorrt-version V      dry run: ... and this TensorRT version\n"
    "  --device N                CUDA device (default 0)\n"
    "  --no-verify-hashes        skip the SHA-256 check of the engine files\n"
    "  --kv-ping-pong            decode writes into a second KV buffer instead of in place\n"
    "  --seed S                  seed of the synthetic request (default 0)\n"
    "  --help                    this text\n";

struct UsageError
{
    std::string message;
};

int64_t parseInt(std::string const& option, char const* text)
{
    char* end = nullptr;
    long long value = std::strtoll(text, &end, 10);
    if (!*text || *end)
    {
        throw UsageError{option + " needs an integer, got '" + text + "'"};
    }
    return value;
}

double parseFloat(std::string const& option, char const* text)
{
    char* end = nullptr;
    double value = std::strtod(text, &end);
    if (!*text || *end)
    {
        throw UsageError{option + " needs a number, got '" + text + "'"};
    }
    return value;
}

struct Args
{
    std::string exportDir;
    int64_t audioTokens = -1;
    int64_t prefixTokens = 8;
    int64_t suffixTokens = 8;
    int64_t maxNewTokens = 16;
    int64_t batch = 1;
    int64_t numBeams = 1;
    std::vector<int64_t> eos;
    bool hasPad = false;
    int64_t pad = 0;
    double lengthPenalty = 1.0;
    int earlyStopping = FASTADASP_EARLY_STOPPING_FALSE;
    bool dryRun = false;
    int executor = FASTADASP_EXECUTOR_TENSORRT;
    std::string engine, pluginLibrary, computeCapability, tensorrtVersion;
    int device = 0;
    bool verifyHashes = true;
    bool kvInPlace = true;
    uint64_t seed = 0;
};

Args parse(int argc, char** argv)
{
    Args a;
    for (int i = 1; i < argc; ++i)
    {
        std::string option = argv[i];
        auto value = [&]() -> char const* {
            if (i + 1 >= argc)
            {
                throw UsageError{option + " needs a value"};
            }
            return argv[++i];
        };
        if (option == "--help" || option == "-h")
        {
            std::fputs(kUsage, stdout);
            std::exit(0);
        }
        else if (option == "--export-dir") a.exportDir = value();
        else if (option == "--audio-tokens") a.audioTokens = parseInt(option, value());
        else if (option == "--text-tokens")
        {
            std::string text = value();
            std::size_t colon = text.find(':');
            if (colon == std::string::npos)
            {
                throw UsageError{"--text-tokens must be P:S (prefix:suffix), e.g. 8:8; got '" + text + "'"};
            }
            a.prefixTokens = parseInt(option, text.substr(0, colon).c_str());
            a.suffixTokens = parseInt(option, text.substr(colon + 1).c_str());
        }
        else if (option == "--max-new-tokens") a.maxNewTokens = parseInt(option, value());
        else if (option == "--batch") a.batch = parseInt(option, value());
        else if (option == "--num-beams") a.numBeams = parseInt(option, value());
        else if (option == "--eos-token-id") a.eos.push_back(parseInt(option, value()));
        else if (option == "--pad-token-id")
        {
            a.hasPad = true;
            a.pad = parseInt(option, value());
        }
        else if (option == "--length-penalty") a.lengthPenalty = parseFloat(option, value());
        else if (option == "--early-stopping")
        {
            std::string mode = value();
            if (mode == "false") a.earlyStopping = FASTADASP_EARLY_STOPPING_FALSE;
            else if (mode == "true") a.earlyStopping = FASTADASP_EARLY_STOPPING_TRUE;
            else if (mode == "never") a.earlyStopping = FASTADASP_EARLY_STOPPING_NEVER;
            else throw UsageError{"--early-stopping must be false, true or never; got '" + mode + "'"};
        }
        else if (option == "--dry-run") a.dryRun = true;
        else if (option == "--executor")
        {
            std::string kind = value();
            if (kind == "tensorrt") a.executor = FASTADASP_EXECUTOR_TENSORRT;
            else if (kind == "fake") a.executor = FASTADASP_EXECUTOR_FAKE;
            else throw UsageError{"--executor must be tensorrt or fake; got '" + kind + "'"};
        }
        else if (option == "--engine") a.engine = value();
        else if (option == "--plugin-library") a.pluginLibrary = value();
        else if (option == "--compute-capability") a.computeCapability = value();
        else if (option == "--tensorrt-version") a.tensorrtVersion = value();
        else if (option == "--device") a.device = static_cast<int>(parseInt(option, value()));
        else if (option == "--no-verify-hashes") a.verifyHashes = false;
        else if (option == "--kv-ping-pong") a.kvInPlace = false;
        else if (option == "--seed") a.seed = static_cast<uint64_t>(parseInt(option, value()));
        else throw UsageError{"unknown option " + option + " (see --help)"};
    }
    if (a.exportDir.empty())
    {
        throw UsageError{"--export-dir is required (a directory written by export-engine)"};
    }
    if (a.audioTokens < 0)
    {
        throw UsageError{"--audio-tokens is required"};
    }
    if (!a.dryRun && (!a.computeCapability.empty() || !a.tensorrtVersion.empty()) && a.executor == FASTADASP_EXECUTOR_TENSORRT)
    {
        throw UsageError{"--compute-capability and --tensorrt-version only apply with --dry-run (or --executor fake)"};
    }
    return a;
}

// User errors (bad value, manifest, no engine, limits, no GPU) exit 2, like the Python CLI; failures while
// running exit 1.
int report(fastadasp_status status)
{
    std::fprintf(stderr, "fastadasp-run: %s\n", fastadasp_last_error());
    return status == FASTADASP_ERROR_BACKEND || status == FASTADASP_ERROR_INTERNAL ? 1 : 2;
}

uint64_t nextRandom(uint64_t& state)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
}

} // namespace

int main(int argc, char** argv)
{
    Args a;
    try
    {
        a = parse(argc, argv);
    }
    catch (UsageError const& e)
    {
        std::fprintf(stderr, "fastadasp-run: %s\n", e.message.c_str());
        return 2;
    }

    fastadasp_options options;
    fastadasp_options_init(&options);
    options.export_dir = a.exportDir.c_str();
    options.executor = a.dryRun ? FASTADASP_EXECUTOR_NONE : a.executor;
    options.engine_key = a.engine.empty() ? nullptr : a.engine.c_str();
    options.plugin_library = a.pluginLibrary.empty() ? nullptr : a.pluginLibrary.c_str();
    options.assume_compute_capability = a.computeCapability.empty() ? nullptr : a.computeCapability.c_str();
    options.assume_tensorrt_version = a.tensorrtVersion.empty() ? nullptr : a.tensorrtVersion.c_str();
    options.device = a.device;
    options.verify_hashes = a.verifyHashes ? 1 : 0;
    options.kv_in_place = a.kvInPlace ? 1 : 0;
    options.fake_seed = a.seed;

    fastadasp_runtime* runtime = nullptr;
    fastadasp_status status = fastadasp_create(&options, &runtime);
    if (status != FASTADASP_OK)
    {
        return report(status);
    }

    fastadasp_request_shape shape{static_cast<int32_t>(a.batch), static_cast<int32_t>(a.numBeams),
        static_cast<int32_t>(a.prefixTokens), static_cast<int32_t>(a.audioTokens), static_cast<int32_t>(a.suffixTokens),
        static_cast<int32_t>(a.maxNewTokens)};
    if (a.dryRun)
    {
        char* json = nullptr;
        status = fastadasp_plan_json(runtime, &shape, &json);
        if (status != FASTADASP_OK)
        {
            fastadasp_destroy(runtime);
            return report(status);
        }
        std::printf("%s\n", json);
        fastadasp_free_string(json);
        fastadasp_destroy(runtime);
        return 0;
    }

    fastadasp_model_info model;
    fastadasp_model(runtime, &model);
    // A synthetic request: token ids below the last id (often EOS / pad in small vocabularies), audio in [-1, 1).
    uint64_t state = a.seed + 1;
    std::vector<int64_t> prefix(static_cast<std::size_t>(a.batch * a.prefixTokens));
    std::vector<int64_t> suffix(static_cast<std::size_t>(a.batch * a.suffixTokens));
    for (auto& id : prefix) id = static_cast<int64_t>(nextRandom(state) % static_cast<uint64_t>(model.vocab_size - 1));
    for (auto& id : suffix) id = static_cast<int64_t>(nextRandom(state) % static_cast<uint64_t>(model.vocab_size - 1));
    std::vector<float> audio(static_cast<std::size_t>(a.batch * a.audioTokens * model.hidden_size));
    for (auto& x : audio) x = static_cast<float>(nextRandom(state) % 2000000) / 1000000.0f - 1.0f;
    std::vector<float> lora(static_cast<std::size_t>(a.batch * model.hidden_size), 1.0f);

    fastadasp_request request{static_cast<int32_t>(a.batch), static_cast<int32_t>(a.prefixTokens),
        static_cast<int32_t>(a.audioTokens), static_cast<int32_t>(a.suffixTokens), prefix.data(), audio.data(),
        suffix.data(), model.prompt_lora ? lora.data() : nullptr};
    fastadasp_generation_config config;
    fastadasp_generation_config_init(&config);
    config.max_new_tokens = static_cast<int32_t>(a.maxNewTokens);
    config.num_beams = static_cast<int32_t>(a.numBeams);
    config.eos_token_ids = a.eos.empty() ? nullptr : a.eos.data();
    config.num_eos_token_ids = static_cast<int32_t>(a.eos.size());
    config.has_pad_token_id = a.hasPad ? 1 : 0;
    config.pad_token_id = a.pad;
    config.length_penalty = a.lengthPenalty;
    config.early_stopping = a.earlyStopping;

    fastadasp_result* result = nullptr;
    status = fastadasp_generate(runtime, &request, &config, &result);
    if (status != FASTADASP_OK)
    {
        fastadasp_destroy(runtime);
        return report(status);
    }
    int32_t rows = fastadasp_result_rows(result);
    int32_t length = fastadasp_result_length(result);
    int64_t const* tokens = fastadasp_result_tokens(result);
    float const* scores = fastadasp_result_scores(result);
    int32_t steps = fastadasp_result_decode_steps(result);
    double decodeMs = fastadasp_result_decode_ms(result);
    std::string engine;
    for (char const* c = fastadasp_engine_key(runtime); *c; ++c) // a JSON string: escape quotes and backslashes
    {
        engine += (*c == '"' || *c == '\\') ? std::string("\\") + *c : std::string(1, *c);
    }
    std::printf("{\n  \"executor\": \"%s\",\n  \"engine\": %s,\n", a.executor == FASTADASP_EXECUTOR_FAKE ? "fake" : "tensorrt",
        engine.empty() ? "null" : ("\"" + engine + "\"").c_str());
    std::printf("  \"tokens\": [");
    for (int32_t r = 0; r < rows; ++r)
    {
        std::printf("%s[", r ? ", " : "");
        for (int32_t t = 0; t < length; ++t)
        {
            std::printf("%s%lld", t ? ", " : "", static_cast<long long>(tokens[r * length + t]));
        }
        std::printf("]");
    }
    std::printf("],\n  \"scores\": ");
    if (scores)
    {
        std::printf("[");
        for (int32_t r = 0; r < rows; ++r)
        {
            std::printf("%s%.9g", r ? ", " : "", static_cast<double>(scores[r]));
        }
        std::printf("]");
    }
    else
    {
        std::printf("null");
    }
    std::printf(",\n  \"prefill_ms\": %.3f,\n  \"decode_ms\": %.3f,\n  \"decode_steps\": %d,\n  \"ms_per_decode_step\": %.3f\n}\n",
        fastadasp_result_prefill_ms(result), decodeMs, steps, steps ? decodeMs / steps : 0.0);
    fastadasp_result_free(result);
    fastadasp_destroy(runtime);
    return 0;
}
