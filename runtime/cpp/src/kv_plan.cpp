#include "kv_plan.h"

#include "bindings.h"
#include "errors.h"
#include "length_rule.h"

#include <algorithm>
#include <sstream>

namespace fastadasp
{
namespace
{

std::string shapeText(std::vector<int64_t> const& shape)
{
    std::ostringstream out;
    out << "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        out << (i ? ", " : "") << shape[i];
    }
    out << "]";
    return out.str();
}

void checkShape(EngineEntry const& entry, std::string const& role, std::string const& name,
    std::vector<int64_t> const& shape)
{
    auto engine = entry.graphs.find(role);
    if (engine == entry.graphs.end())
    {
        throw Error(Status::kManifest, "engine entry " + entry.key + " has no " + role + " engine; re-run export-engine");
    }
    auto range = engine->second.profile.find(name);
    if (range == engine->second.profile.end())
    {
        return; // an input the profile does not constrain (static in the engine)
    }
    ProfileRange const& r = range->second;
    bool inside = r.min.size() == shape.size() && r.max.size() == shape.size();
    for (std::size_t i = 0; inside && i < shape.size(); ++i)
    {
        inside = r.min[i] <= shape[i] && shape[i] <= r.max[i];
    }
    if (!inside)
    {
        throw Error(Status::kLimits,
            "the " + role + " engine of " + entry.key + " accepts " + name + " from " + shapeText(r.min) + " to "
                + shapeText(r.max) + ", but this request needs " + shapeText(shape)
                + "; shorten the request or re-export with limits that cover it");
    }
}

} // namespace

ModelGeometry ModelGeometry::fromManifest(Manifest const& manifest)
{
    ModelGeometry g;
    ModelArgs const& a = manifest.model.args;
    g.ratioNumerators = manifest.schedule.ratioNumerators;
    g.ratioDenominator = manifest.schedule.ratioDenominator;
    g.numKvHeads = a.numKvHeads;
    g.headDim = a.headDim;
    g.hiddenSize = a.hiddenSize;
    g.vocabSize = a.vocabSize;
    g.kvElementBytes = precisionBytes(manifest.dtype);
    // The decode graph's own KV dtype wins: it is what the buffers are bound as.
    auto decode = manifest.graphs.find("decode");
    if (decode != manifest.graphs.end())
    {
        auto past = decode->second.inputs.find(bindings::pastKey(0));
        if (past != decode->second.inputs.end() && dtypeBytes(past->second.dtype) > 0)
        {
            g.kvElementBytes = dtypeBytes(past->second.dtype);
        }
    }
    return g;
}

std::vector<int64_t> KvPlan::prefillLengths() const
{
    std::vector<int64_t> out;
    for (auto const& l : layers)
    {
        out.push_back(l.prefillLength);
    }
    return out;
}

std::vector<int64_t> KvPlan::capacities() const
{
    std::vector<int64_t> out;
    for (auto const& l : layers)
    {
        out.push_back(l.capacity);
    }
    return out;
}

KvPlan planKv(ModelGeometry const& g, RequestShape const& request, bool secondKvSet)
{
    KvPlan plan;
    plan.request = request;
    plan.rows = request.rows();
    plan.numKvHeads = g.numKvHeads;
    plan.headDim = g.headDim;
    plan.elementBytes = g.kvElementBytes;
    std::vector<int64_t> n = spanLengths(g.ratioNumerators, g.ratioDenominator, request.audioTokens);
    for (int64_t i = 0; i < g.numLayers(); ++i)
    {
        LayerPlan l;
        l.layer = i;
        l.ratioNumerator = g.ratioNumerators[i];
        l.audioTokens = n[i];
        l.merged = n[i] - n[i + 1];
        l.prefillLength = request.prefixTokens + n[i] + request.suffixTokens;
        l.capacity = l.prefillLength + request.maxNewTokens;
        l.kvBytes = 2 * plan.rows * g.numKvHeads * l.capacity * g.headDim * g.kvElementBytes;
        plan.kvBytes += l.kvBytes;
        plan.layers.push_back(l);
    }
    plan.audioTokensAfterLastLayer = n.back();
    plan.firstDecodePosition = decodePosition(request.prefixTokens, request.audioTokens, request.suffixTokens, 0);
    plan.reorderBytes = secondKvSet ? plan.kvBytes : 0;
    return plan;
}

void checkRequest(Manifest const& manifest, RequestShape const& r)
{
    auto invalid = [](std::string const& message) { throw Error(Status::kInvalidArgument, message); };
    if (r.batch < 1)
    {
        invalid("batch must be >= 1, got " + std::to_string(r.batch));
    }
    if (r.numBeams < 1)
    {
        invalid("num_beams must be >= 1, got " + std::to_string(r.numBeams));
    }
    if (r.maxNewTokens < 1)
    {
        invalid("max_new_tokens must be >= 1, got " + std::to_string(r.maxNewTokens));
    }
    if (r.prefixTokens < 0 || r.suffixTokens < 0)
    {
        invalid("prefix and suffix token counts must be >= 0, got " + std::to_string(r.prefixTokens) + ":"
            + std::to_string(r.suffixTokens));
    }
    ServingLimits const& limits = manifest.limits;
    AudioTokenRange const& range = manifest.audioTokensRange;
    auto limit = [](std::string const& message) { throw Error(Status::kLimits, message); };
    if (r.audioTokens < range.min || r.audioTokens > range.max)
    {
        limit(std::to_string(r.audioTokens) + " audio tokens are outside this export's range " + std::to_string(range.min)
            + ":" + std::to_string(range.opt) + ":" + std::to_string(range.max)
            + "; re-export with an --audio-tokens-range that covers it");
    }
    if (r.rows() > limits.maxBatch)
    {
        limit("batch x beams = " + std::to_string(r.rows()) + " rows, but this export serves at most "
            + std::to_string(limits.maxBatch) + " (batch x beams); re-export with --max-batch "
            + std::to_string(r.rows()) + " or use fewer beams");
    }
    if (r.maxNewTokens > limits.maxNewTokens)
    {
        limit("max_new_tokens " + std::to_string(r.maxNewTokens) + " exceeds this export's decode budget of "
            + std::to_string(limits.maxNewTokens) + "; re-export with --max-new-tokens " + std::to_string(r.maxNewTokens)
            + " or ask for fewer");
    }
    int64_t text = r.prefixTokens + r.suffixTokens;
    if (text > limits.maxTextTokens)
    {
        limit(std::to_string(text) + " text tokens (prefix + suffix), but this export serves at most "
            + std::to_string(limits.maxTextTokens) + "; re-export with --max-text-tokens " + std::to_string(text)
            + " or shorten the prompt");
    }
    int64_t positions = manifest.model.args.maxPositionEmbeddings;
    if (r.promptTokens() + r.maxNewTokens > positions)
    {
        limit("max_new_tokens " + std::to_string(r.maxNewTokens) + ": the " + std::to_string(r.promptTokens())
            + "-token prompt plus the new tokens passes the model's " + std::to_string(positions)
            + " positions; pass at most " + std::to_string(std::max<int64_t>(positions - r.promptTokens(), 0)));
    }
}

void checkEngineProfiles(Manifest const& manifest, EngineEntry const& entry, KvPlan const& plan)
{
    RequestShape const& r = plan.request;
    int64_t d = manifest.model.args.hiddenSize;
    checkShape(entry, "prefill", bindings::kPrefixIds, {r.batch, r.prefixTokens});
    checkShape(entry, "prefill", bindings::kAudioEmbeds, {r.batch, r.audioTokens, d});
    checkShape(entry, "prefill", bindings::kSuffixIds, {r.batch, r.suffixTokens});
    if (manifest.model.promptLora)
    {
        checkShape(entry, "prefill", bindings::kLoraScale, {r.batch, d});
        checkShape(entry, "decode", bindings::kLoraScale, {plan.rows, d});
    }
    checkShape(entry, "decode", bindings::kInputIds, {plan.rows, 1});
    checkShape(entry, "decode", bindings::kPositionIds, {plan.rows, 1});
    for (auto const& l : plan.layers)
    {
        std::vector<int64_t> shape{plan.rows, plan.numKvHeads, l.capacity, plan.headDim};
        checkShape(entry, "decode", bindings::pastKey(l.layer), shape);
        checkShape(entry, "decode", bindings::pastValue(l.layer), shape);
    }
}

} // namespace fastadasp
