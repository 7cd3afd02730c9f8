#include "runtime.h"

#include "bindings.h"
#include "errors.h"
#include "fake_executor.h"
#include "sha256.h"
#include "tensorrt/trt_executor.h"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

namespace fastadasp
{
namespace
{

using nlohmann::ordered_json;

bool fileExists(std::string const& path)
{
    struct stat info{};
    return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

// The plugin libraries to load for `entry`: the recorded paths, or the caller's library in their place; each
// must be the library the engines were built with (engines serialise the plugin's fields, not its code).
[[maybe_unused]] std::vector<std::string> pluginLibraries(EngineEntry const& entry, RuntimeOptions const& options)
{
    std::vector<std::string> paths;
    if (!options.pluginLibrary.empty())
    {
        if (!fileExists(options.pluginLibrary))
        {
            throw Error(Status::kInvalidArgument, "plugin library " + options.pluginLibrary + " does not exist");
        }
        if (options.verifyHashes && entry.pluginLibraries.size() == 1
            && sha256File(options.pluginLibrary) != entry.pluginLibraries[0].sha256)
        {
            throw Error(Status::kManifest,
                "plugin library " + options.pluginLibrary + " is not the one the engines of " + entry.key
                    + " were built with (its SHA-256 differs from " + kManifestName
                    + "); pass that library, or rebuild the engines with this one");
        }
        paths.push_back(options.pluginLibrary);
        return paths;
    }
    for (auto const& library : entry.pluginLibraries)
    {
        if (!fileExists(library.file))
        {
            throw Error(Status::kManifest,
                "the WeightedMerge plugin library " + library.file + " recorded for " + entry.key
                    + " is missing on this machine; build it with `python -m fastadasp.plugins` and pass its path "
                      "as the plugin library (fastadasp-run --plugin-library)");
        }
        if (options.verifyHashes && sha256File(library.file) != library.sha256)
        {
            throw Error(Status::kManifest,
                "plugin library " + library.file + " changed since the engines of " + entry.key
                    + " were built (SHA-256 differs from " + kManifestName + "); rebuild the engines or pass the original library");
        }
        paths.push_back(library.file);
    }
    return paths;
}

ordered_json manifestSummary(Manifest const& m)
{
    ModelArgs const& a = m.model.args;
    ordered_json engines = ordered_json::array();
    for (auto const& e : m.engines)
    {
        engines.push_back(e.key);
    }
    return ordered_json{
        {"format", kManifestFormat},
        {"version", m.version},
        {"fastadasp_version", m.fastadaspVersion},
        {"model",
            {{"name", m.model.name}, {"family", m.model.family}, {"num_layers", a.numLayers},
                {"hidden_size", a.hiddenSize}, {"vocab_size", a.vocabSize}, {"num_heads", a.numHeads},
                {"num_kv_heads", a.numKvHeads}, {"head_dim", a.headDim},
                {"max_position_embeddings", a.maxPositionEmbeddings}, {"prompt_lora", m.model.promptLora}}},
        {"schedule",
            {{"kind", m.schedule.kind}, {"start_layer", m.schedule.startLayer},
                {"ratio_numerators", m.schedule.ratioNumerators}, {"ratio_denominator", m.schedule.ratioDenominator}}},
        {"position_policy", m.positionPolicy},
        {"dtype", m.dtype},
        {"audio_tokens_range", {{"min", m.audioTokensRange.min}, {"opt", m.audioTokensRange.opt}, {"max", m.audioTokensRange.max}}},
        {"limits",
            {{"max_batch", m.limits.maxBatch}, {"max_text_tokens", m.limits.maxTextTokens},
                {"max_new_tokens", m.limits.maxNewTokens}}},
        {"engines", engines},
    };
}

ordered_json nullable(std::string const& text)
{
    return text.empty() ? ordered_json(nullptr) : ordered_json(text);
}

} // namespace

bool builtWithTensorRT()
{
#ifdef FASTADASP_WITH_TENSORRT
    return true;
#else
    return false;
#endif
}

std::unique_ptr<Runtime> Runtime::open(RuntimeOptions const& options)
{
    std::unique_ptr<Runtime> rt(new Runtime());
    rt->mOptions = options;
    rt->mManifest = loadManifest(options.exportDir);
    bindings::checkGraphBindings(rt->mManifest);
    rt->mGeometry = ModelGeometry::fromManifest(rt->mManifest);
    bool assumed = !options.assumeComputeCapability.empty() || !options.assumeTensorRTVersion.empty();

    if (options.executor == ExecutorKind::kTensorRT)
    {
        if (assumed)
        {
            throw Error(Status::kInvalidArgument,
                "an assumed compute capability / TensorRT version is for planning only; drop it to run on this GPU");
        }
#ifdef FASTADASP_WITH_TENSORRT
        rt->mPlatform = detectTensorRTPlatform(options.device);
        rt->mChoice = chooseEngine(rt->mManifest, rt->mPlatform, options.engineKey);
        if (!rt->mChoice.entry)
        {
            throw Error(Status::kNoEngine, rt->mChoice.reason);
        }
        EngineEntry const& entry = *rt->mChoice.entry;
        verifyEngineFiles(rt->mManifest, entry, options.verifyHashes);
        TensorRTOptions trt;
        trt.device = options.device;
        trt.kvInPlace = options.kvInPlace;
        trt.pluginLibraries = pluginLibraries(entry, options);
        rt->mExecutor = createTensorRTExecutor(rt->mManifest, entry, trt);
        return rt;
#else
        throw Error(Status::kUnavailable,
            "this fastadasp_runtime was built without TensorRT (libnvinfer and its headers were not found when it was "
            "built; configure with -DTENSORRT_ROOT=<TensorRT install>); planning (fastadasp-run --dry-run) and the "
            "fake executor work without it");
#endif
    }

    // Planning-only and fake handles: choose the entry a GPU would use, when we know (or are told) which GPU.
    if (assumed)
    {
        rt->mPlatform.computeCapability = normalizeComputeCapability(options.assumeComputeCapability);
        if (!options.assumeComputeCapability.empty() && rt->mPlatform.computeCapability.empty())
        {
            throw Error(Status::kInvalidArgument,
                "compute capability '" + options.assumeComputeCapability + "' is not like '8.6' or 'sm86'");
        }
        rt->mPlatform.toolkitVersion = options.assumeTensorRTVersion;
        rt->mPlatform.source = "assumed";
    }
    else
    {
#ifdef FASTADASP_WITH_TENSORRT
        try
        {
            rt->mPlatform = detectTensorRTPlatform(options.device);
        }
        catch (Error const& e)
        {
            rt->mPlatformNote = e.what();
        }
#else
        rt->mPlatformNote = "this build has no TensorRT; assume a compute capability and TensorRT version to check "
                            "the engine choice";
#endif
    }
    rt->mChoice = chooseEngine(rt->mManifest, rt->mPlatform, options.engineKey);
    if (options.executor == ExecutorKind::kFake)
    {
        rt->mExecutor = std::make_unique<FakeExecutor>(rt->mGeometry.vocabSize, options.fakeSeed);
    }
    return rt;
}

KvPlan Runtime::plan(RequestShape const& shape) const
{
    checkRequest(mManifest, shape);
    KvPlan plan = planKv(mGeometry, shape, needsSecondKvSet(shape.numBeams, mOptions.kvInPlace));
    if (mOptions.executor == ExecutorKind::kTensorRT && mChoice.entry)
    {
        checkEngineProfiles(mManifest, *mChoice.entry, plan);
    }
    return plan;
}

std::string Runtime::planJson(RequestShape const& shape) const
{
    KvPlan plan = this->plan(shape);
    ordered_json entries = ordered_json::array();
    for (auto const& v : mChoice.entries)
    {
        entries.push_back({{"key", v.entry->key}, {"flavor", v.entry->flavor},
            {"toolkit_version", v.entry->toolkitVersion}, {"target", v.entry->computeCapability},
            {"compute_capability", nullable(v.computeCapability)}, {"precision", v.entry->precision},
            {"usable", v.usable}, {"why", v.why}});
    }
    ordered_json profileCheck = nullptr;
    if (mChoice.entry)
    {
        try
        {
            checkEngineProfiles(mManifest, *mChoice.entry, plan);
            profileCheck = "ok";
        }
        catch (Error const& e)
        {
            profileCheck = e.what();
        }
    }
    ordered_json layers = ordered_json::array();
    for (auto const& l : plan.layers)
    {
        layers.push_back({{"layer", l.layer}, {"ratio_numerator", l.ratioNumerator}, {"audio_tokens", l.audioTokens},
            {"merged", l.merged}, {"prefill_kv_length", l.prefillLength}, {"capacity", l.capacity},
            {"kv_bytes", l.kvBytes}});
    }
    ordered_json report = {
        {"export_dir", mManifest.directory},
        {"manifest", manifestSummary(mManifest)},
        {"platform",
            {{"flavor", mPlatform.flavor}, {"tensorrt_version", nullable(mPlatform.toolkitVersion)},
                {"compute_capability", nullable(mPlatform.computeCapability)}, {"device", nullable(mPlatform.device)},
                {"source", mPlatform.source}, {"note", nullable(mPlatformNote)}}},
        {"engine",
            {{"chosen", mChoice.entry ? ordered_json(mChoice.entry->key) : ordered_json(nullptr)},
                {"checked", mChoice.checked}, {"reason", mChoice.reason}, {"entries", entries},
                {"build_command", mChoice.buildCommand}, {"profile_check", profileCheck}}},
        {"request",
            {{"batch", shape.batch}, {"num_beams", shape.numBeams}, {"rows", plan.rows},
                {"prefix_tokens", shape.prefixTokens}, {"audio_tokens", shape.audioTokens},
                {"suffix_tokens", shape.suffixTokens}, {"max_new_tokens", shape.maxNewTokens}}},
        {"kv_bytes_per_element", plan.elementBytes},
        {"layers", layers},
        {"audio_tokens_per_layer", [&] {
             ordered_json n = ordered_json::array();
             for (auto const& l : plan.layers)
             {
                 n.push_back(l.audioTokens);
             }
             n.push_back(plan.audioTokensAfterLastLayer);
             return n;
         }()},
        {"prefill_kv_lengths", plan.prefillLengths()},
        {"capacities", plan.capacities()},
        {"first_decode_position", plan.firstDecodePosition},
        {"kv_bytes_total", plan.kvBytes},
        {"reorder_bytes", plan.reorderBytes},
    };
    return report.dump(2);
}

GenerationResult Runtime::generate(PrefillBatch const& batch, GenerationConfig const& config)
{
    std::lock_guard<std::mutex> lock(mMutex);
    if (!mExecutor)
    {
        throw Error(Status::kUnavailable, "this runtime was opened for planning only (executor NONE); open it with "
                                          "the TensorRT or fake executor to generate");
    }
    config.validate();
    if (batch.hiddenSize != mGeometry.hiddenSize)
    {
        throw Error(Status::kInvalidArgument,
            "audio_embeds has hidden size " + std::to_string(batch.hiddenSize) + ", the model's is "
                + std::to_string(mGeometry.hiddenSize));
    }
    auto missing = [](bool needed, void const* pointer) { return needed && pointer == nullptr; };
    if (missing(batch.prefixTokens > 0, batch.prefixIds) || missing(true, batch.audioEmbeds)
        || missing(batch.suffixTokens > 0, batch.suffixIds))
    {
        throw Error(Status::kInvalidArgument, "the request lacks prefix_ids, audio_embeds or suffix_ids data");
    }
    if (mManifest.model.promptLora != (batch.loraScale != nullptr))
    {
        throw Error(Status::kInvalidArgument,
            mManifest.model.promptLora ? "this export was made with prompt-aware LoRA: pass lora_scale [batch, hidden_size]"
                                       : "this export takes no lora_scale; pass NULL");
    }
    RequestShape shape{batch.batch, config.numBeams, batch.prefixTokens, batch.audioTokens, batch.suffixTokens,
        config.maxNewTokens};
    KvPlan kv = plan(shape);
    return fastadasp::generate(*mExecutor, kv, mGeometry.vocabSize, batch, config);
}

} // namespace fastadasp
