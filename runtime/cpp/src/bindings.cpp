#include "bindings.h"

#include "errors.h"

namespace fastadasp
{
namespace bindings
{

std::string pastKey(int64_t layer)
{
    return "past." + std::to_string(layer) + ".key";
}
std::string pastValue(int64_t layer)
{
    return "past." + std::to_string(layer) + ".value";
}
std::string presentKey(int64_t layer)
{
    return "present." + std::to_string(layer) + ".key";
}
std::string presentValue(int64_t layer)
{
    return "present." + std::to_string(layer) + ".value";
}

std::vector<std::string> prefillInputs(int64_t /*numLayers*/, bool promptLora)
{
    std::vector<std::string> names{kPrefixIds, kAudioEmbeds, kSuffixIds};
    if (promptLora)
    {
        names.emplace_back(kLoraScale);
    }
    return names;
}

std::vector<std::string> prefillOutputs(int64_t numLayers)
{
    std::vector<std::string> names{kLogits};
    for (int64_t i = 0; i < numLayers; ++i)
    {
        names.push_back(presentKey(i));
        names.push_back(presentValue(i));
    }
    return names;
}

std::vector<std::string> decodeInputs(int64_t numLayers, bool promptLora)
{
    std::vector<std::string> names{kInputIds, kPositionIds, kCacheLengths};
    if (promptLora)
    {
        names.emplace_back(kLoraScale);
    }
    for (int64_t i = 0; i < numLayers; ++i)
    {
        names.push_back(pastKey(i));
        names.push_back(pastValue(i));
    }
    return names;
}

std::vector<std::string> decodeOutputs(int64_t numLayers)
{
    return prefillOutputs(numLayers);
}

namespace
{

void require(Manifest const& m, std::string const& role, bool input, std::vector<std::string> const& names)
{
    GraphEntry const& graph = m.graph(role);
    auto const& tensors = input ? graph.inputs : graph.outputs;
    for (auto const& name : names)
    {
        auto it = tensors.find(name);
        if (it == tensors.end())
        {
            throw Error(Status::kManifest,
                m.source + ": graphs." + role + "." + (input ? "inputs" : "outputs") + " has no '" + name
                    + "', which this runtime binds; re-run export-engine with this fastadasp");
        }
        bool kv = name.rfind("past.", 0) == 0 || name.rfind("present.", 0) == 0;
        if (!kv)
        {
            continue;
        }
        auto const& shape = it->second.shape;
        ModelArgs const& a = m.model.args;
        bool ok = shape.size() == 4 && shape[1].value == a.numKvHeads && shape[3].value == a.headDim;
        if (!ok)
        {
            throw Error(Status::kManifest,
                m.source + ": graphs." + role + " tensor '" + name + "' is not [batch, " + std::to_string(a.numKvHeads)
                    + ", length, " + std::to_string(a.headDim) + "] (model.args num_kv_heads, head_dim); re-run export-engine");
        }
    }
}

} // namespace

void checkGraphBindings(Manifest const& m)
{
    int64_t layers = m.model.args.numLayers;
    bool lora = m.model.promptLora;
    require(m, "prefill", true, prefillInputs(layers, lora));
    require(m, "prefill", false, prefillOutputs(layers));
    require(m, "decode", true, decodeInputs(layers, lora));
    require(m, "decode", false, decodeOutputs(layers));
    auto const& lengths = m.graph("decode").inputs.at(kCacheLengths).shape;
    if (lengths.size() != 1 || lengths[0].value != layers)
    {
        throw Error(Status::kManifest,
            m.source + ": graphs.decode input 'cache_lengths' is not [" + std::to_string(layers)
                + "] (one length per layer); re-run export-engine");
    }
}

} // namespace bindings
} // namespace fastadasp
