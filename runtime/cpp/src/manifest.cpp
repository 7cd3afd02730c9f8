#include "manifest.h"

#include "errors.h"
#include "sha256.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace fastadasp
{
namespace
{

using nlohmann::json;

// The Python type names the messages of fastadasp/core/manifest.py use, so both readers say the same thing.
char const* pythonTypeName(json const& value)
{
    switch (value.type())
    {
    case json::value_t::null: return "NoneType";
    case json::value_t::object: return "dict";
    case json::value_t::array: return "list";
    case json::value_t::string: return "str";
    case json::value_t::boolean: return "bool";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "int";
    case json::value_t::number_float: return "float";
    default: return "unknown";
    }
}

// Walks the JSON tree with the dotted path of each value, so every message names the key to fix.
class Reader
{
public:
    explicit Reader(std::string source)
        : mSource(std::move(source))
    {
    }

    [[noreturn]] void fail(std::string const& where, std::string const& what) const
    {
        throw Error(Status::kManifest,
            mSource + ": " + (where.empty() ? std::string("the top level") : where) + " " + what
                + "; re-run export-engine to write a complete manifest");
    }

    static std::string join(std::string const& where, std::string const& key)
    {
        return where.empty() ? key : where + "." + key;
    }

    json const& object(json const& value, std::string const& where) const
    {
        if (!value.is_object())
        {
            fail(where.empty() ? where : "'" + where + "'", std::string("must be an object, not ") + pythonTypeName(value));
        }
        return value;
    }

    json const* optional(json const& obj, char const* key) const
    {
        auto it = obj.find(key);
        return it == obj.end() ? nullptr : &*it;
    }

    json const& required(json const& obj, char const* key, std::string const& where) const
    {
        auto it = obj.find(key);
        if (it == obj.end())
        {
            fail("'" + join(where, key) + "'", "is missing");
        }
        return *it;
    }

    [[noreturn]] void mistyped(json const& value, std::string const& path, char const* want) const
    {
        fail("'" + path + "'", std::string("must be ") + want + ", not " + pythonTypeName(value));
    }

    std::string str(json const& value, std::string const& path) const
    {
        if (!value.is_string())
        {
            mistyped(value, path, "str");
        }
        return value.get<std::string>();
    }

    int64_t integer(json const& value, std::string const& path) const
    {
        if (!value.is_number_integer())
        {
            mistyped(value, path, "int");
        }
        return value.get<int64_t>();
    }

    double number(json const& value, std::string const& path) const
    {
        if (!value.is_number())
        {
            mistyped(value, path, "float");
        }
        return value.get<double>();
    }

    bool boolean(json const& value, std::string const& path) const
    {
        if (!value.is_boolean())
        {
            mistyped(value, path, "bool");
        }
        return value.get<bool>();
    }

    json const& list(json const& value, std::string const& path) const
    {
        if (!value.is_array())
        {
            fail("'" + path + "'", "must be a list");
        }
        return value;
    }

    json const& dict(json const& value, std::string const& path) const
    {
        if (!value.is_object())
        {
            fail("'" + path + "'", "must be an object");
        }
        return value;
    }

    // Field accessors: obj[key] with its path, required.
    std::string str(json const& obj, char const* key, std::string const& where) const
    {
        return str(required(obj, key, where), join(where, key));
    }
    int64_t integer(json const& obj, char const* key, std::string const& where) const
    {
        return integer(required(obj, key, where), join(where, key));
    }
    double number(json const& obj, char const* key, std::string const& where) const
    {
        return number(required(obj, key, where), join(where, key));
    }
    bool boolean(json const& obj, char const* key, std::string const& where) const
    {
        return boolean(required(obj, key, where), join(where, key));
    }
    // A float | None field: the key must be there (the dataclass has no default), null allowed.
    std::optional<double> nullableNumber(json const& obj, char const* key, std::string const& where) const
    {
        json const& value = required(obj, key, where);
        if (value.is_null())
        {
            return std::nullopt;
        }
        return number(value, join(where, key));
    }
    std::vector<std::string> strings(json const& obj, char const* key, std::string const& where) const
    {
        std::string path = join(where, key);
        json const& value = list(required(obj, key, where), path);
        std::vector<std::string> out;
        for (std::size_t i = 0; i < value.size(); ++i)
        {
            out.push_back(str(value[i], path + "[" + std::to_string(i) + "]"));
        }
        return out;
    }
    std::vector<int64_t> integers(json const& value, std::string const& path) const
    {
        list(value, path);
        std::vector<int64_t> out;
        for (std::size_t i = 0; i < value.size(); ++i)
        {
            out.push_back(integer(value[i], path + "[" + std::to_string(i) + "]"));
        }
        return out;
    }

    std::string const& source() const
    {
        return mSource;
    }

private:
    std::string mSource;
};

TensorSpec readTensor(Reader const& r, json const& value, std::string const& where)
{
    r.object(value, where);
    TensorSpec spec;
    spec.dtype = r.str(value, "dtype", where);
    std::string path = Reader::join(where, "shape");
    json const& shape = r.list(r.required(value, "shape", where), path);
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        Dim dim;
        if (shape[i].is_string())
        {
            dim.name = shape[i].get<std::string>();
        }
        else
        {
            dim.value = r.integer(shape[i], path + "[" + std::to_string(i) + "]");
        }
        spec.shape.push_back(dim);
    }
    return spec;
}

std::map<std::string, TensorSpec> readTensors(Reader const& r, json const& obj, char const* key, std::string const& where)
{
    std::string path = Reader::join(where, key);
    json const& value = r.dict(r.required(obj, key, where), path);
    std::map<std::string, TensorSpec> out;
    for (auto it = value.begin(); it != value.end(); ++it)
    {
        out[it.key()] = readTensor(r, it.value(), path + "." + it.key());
    }
    return out;
}

GraphEntry readGraph(Reader const& r, json const& value, std::string const& where)
{
    r.object(value, where);
    GraphEntry graph;
    graph.file = r.str(value, "file", where);
    graph.files = r.strings(value, "files", where);
    std::string hashes = Reader::join(where, "sha256");
    json const& sha = r.dict(r.required(value, "sha256", where), hashes);
    for (auto it = sha.begin(); it != sha.end(); ++it)
    {
        r.str(it.value(), hashes + "." + it.key());
    }
    graph.inputs = readTensors(r, value, "inputs", where);
    graph.outputs = readTensors(r, value, "outputs", where);
    if (json const* tokens = r.optional(value, "audio_tokens"); tokens && !tokens->is_null())
    {
        r.integer(*tokens, Reader::join(where, "audio_tokens"));
    }
    return graph;
}

EngineFile readEngineFile(Reader const& r, json const& value, std::string const& where)
{
    r.object(value, where);
    EngineFile file;
    file.file = r.str(value, "file", where);
    file.sha256 = r.str(value, "sha256", where);
    file.bytes = r.integer(value, "bytes", where);
    file.cacheKey = r.str(value, "cache_key", where);
    r.nullableNumber(value, "build_seconds", where);
    std::string path = Reader::join(where, "profile");
    json const& profile = r.dict(r.required(value, "profile", where), path);
    for (auto it = profile.begin(); it != profile.end(); ++it)
    {
        std::string at = path + "." + it.key();
        json const& shapes = r.list(it.value(), at);
        if (shapes.size() != 3)
        {
            r.fail("'" + at + "'", "must hold [min, opt, max] shapes");
        }
        ProfileRange range;
        range.min = r.integers(shapes[0], at + "[0]");
        range.opt = r.integers(shapes[1], at + "[1]");
        range.max = r.integers(shapes[2], at + "[2]");
        file.profile[it.key()] = range;
    }
    return file;
}

EngineEntry readEngine(Reader const& r, std::string const& key, json const& value, std::string const& where)
{
    r.object(value, where);
    EngineEntry entry;
    entry.key = key;
    entry.flavor = r.str(value, "flavor", where);
    entry.toolkitVersion = r.str(value, "toolkit_version", where);
    entry.computeCapability = r.str(value, "compute_capability", where);
    entry.precision = r.str(value, "precision", where);
    std::string libs = Reader::join(where, "plugin_libraries");
    json const& libraries = r.list(r.required(value, "plugin_libraries", where), libs);
    for (std::size_t i = 0; i < libraries.size(); ++i)
    {
        std::string at = libs + "[" + std::to_string(i) + "]";
        r.object(libraries[i], at);
        entry.pluginLibraries.push_back({r.str(libraries[i], "file", at), r.str(libraries[i], "sha256", at)});
    }
    std::string graphs = Reader::join(where, "graphs");
    json const& files = r.dict(r.required(value, "graphs", where), graphs);
    for (auto it = files.begin(); it != files.end(); ++it)
    {
        entry.graphs[it.key()] = readEngineFile(r, it.value(), graphs + "." + it.key());
    }
    return entry;
}

void checkHeader(json const& data, std::string const& source)
{
    if (!data.is_object() || !data.contains("format") || data["format"] != kManifestFormat)
    {
        std::string got = !data.is_object() ? std::string(pythonTypeName(data))
                                             : (data.contains("format") ? data["format"].dump() : std::string("None"));
        throw Error(Status::kManifest,
            source + " is not a fastadasp manifest (format " + got + "); point at an export-engine directory");
    }
    json const* version = data.contains("version") ? &data["version"] : nullptr;
    if (version && version->is_number_integer() && version->get<int64_t>() == kManifestVersion)
    {
        return;
    }
    char const* reader = (version && version->is_number_integer()) ? manifestReader(version->get<int64_t>()) : nullptr;
    std::string who = reader ? std::string("it is read by ") + reader : std::string("no fastadasp release reads it");
    throw Error(Status::kManifest,
        source + " has manifest version " + (version ? version->dump() : std::string("None")) + " (" + who
            + "); this fastadasp_runtime reads version " + std::to_string(kManifestVersion) + " (" + kReaderRelease
            + "): re-export with " + kReaderRelease + ", or use the fastadasp that reads that version");
}

// What a runtime needs beyond the per-key types: the schedule covers every layer, the shapes are usable.
void checkConsistency(Reader const& r, Manifest const& m)
{
    ModelArgs const& a = m.model.args;
    if (a.numLayers < 1 || a.numKvHeads < 1 || a.headDim < 1 || a.hiddenSize < 1 || a.vocabSize < 1)
    {
        r.fail("'model.args'", "has a non-positive dimension");
    }
    if (static_cast<int64_t>(m.schedule.ratioNumerators.size()) != a.numLayers)
    {
        r.fail("'schedule.ratio_numerators'",
            "has " + std::to_string(m.schedule.ratioNumerators.size()) + " entries but model.args.num_layers is "
                + std::to_string(a.numLayers));
    }
    if (m.schedule.ratioDenominator < 1)
    {
        r.fail("'schedule.ratio_denominator'", "must be >= 1");
    }
    for (std::size_t i = 0; i < m.schedule.ratioNumerators.size(); ++i)
    {
        int64_t q = m.schedule.ratioNumerators[i];
        if (q < 0 || q >= m.schedule.ratioDenominator)
        {
            r.fail("'schedule.ratio_numerators[" + std::to_string(i) + "]'",
                "is " + std::to_string(q) + ", outside [0, ratio_denominator)");
        }
    }
    if (precisionBytes(m.dtype) == 0)
    {
        r.fail("'dtype'", "is '" + m.dtype + "', not one of fp32, fp16, bf16");
    }
    for (char const* role : {"prefill", "decode"})
    {
        if (!m.graphs.count(role))
        {
            r.fail("'graphs'", std::string("has no '") + role + "' graph");
        }
    }
}

} // namespace

char const* manifestReader(int64_t version)
{
    switch (version)
    {
    case 1: return "fastadasp 0.1.x";
    case 2: return "fastadasp 0.2.x";
    default: return nullptr;
    }
}

EngineEntry const* Manifest::findEngine(std::string const& key) const
{
    for (auto const& entry : engines)
    {
        if (entry.key == key)
        {
            return &entry;
        }
    }
    return nullptr;
}

GraphEntry const& Manifest::graph(std::string const& role) const
{
    auto it = graphs.find(role);
    if (it == graphs.end())
    {
        throw Error(Status::kManifest, source + " has no '" + role + "' graph; re-run export-engine");
    }
    return it->second;
}

Manifest parseManifest(std::string const& text, std::string const& source)
{
    json data;
    try
    {
        data = json::parse(text);
    }
    catch (json::parse_error const& e)
    {
        throw Error(Status::kManifest, source + " is not valid JSON (" + e.what() + "); re-run export-engine");
    }
    checkHeader(data, source);

    Reader r(source);
    Manifest m;
    m.source = source;
    m.version = data["version"].get<int64_t>();
    m.fastadaspVersion = r.str(data, "fastadasp_version", "");

    json const& model = r.object(r.required(data, "model", ""), "model");
    m.model.name = r.str(model, "name", "model");
    m.model.family = r.str(model, "family", "model");
    m.model.promptLora = r.boolean(model, "prompt_lora", "model");
    m.model.configHash = r.str(model, "config_hash", "model");
    json const& args = r.object(r.required(model, "args", "model"), "model.args");
    ModelArgs& a = m.model.args;
    a.vocabSize = r.integer(args, "vocab_size", "model.args");
    a.hiddenSize = r.integer(args, "hidden_size", "model.args");
    a.numLayers = r.integer(args, "num_layers", "model.args");
    a.numHeads = r.integer(args, "num_heads", "model.args");
    a.numKvHeads = r.integer(args, "num_kv_heads", "model.args");
    a.headDim = r.integer(args, "head_dim", "model.args");
    a.intermediateSize = r.integer(args, "intermediate_size", "model.args");
    if (json const* positions = r.optional(args, "max_position_embeddings"))
    {
        a.maxPositionEmbeddings = r.integer(*positions, "model.args.max_position_embeddings");
    }

    json const& schedule = r.object(r.required(data, "schedule", ""), "schedule");
    ScheduleEntry& s = m.schedule;
    s.kind = r.str(schedule, "kind", "schedule");
    s.startLayer = r.integer(schedule, "start_layer", "schedule");
    s.baseRatio = r.number(schedule, "base_ratio", "schedule");
    s.ratioNumerators = r.integers(r.required(schedule, "ratio_numerators", "schedule"), "schedule.ratio_numerators");
    s.ratioDenominator = r.integer(schedule, "ratio_denominator", "schedule");
    s.flopsTarget = r.nullableNumber(schedule, "flops_target", "schedule");
    r.nullableNumber(schedule, "flops_reduction_nominal", "schedule");
    s.nominalAudioTokens = r.integer(schedule, "nominal_audio_tokens", "schedule");
    r.integers(r.required(schedule, "tokens_per_layer_nominal", "schedule"), "schedule.tokens_per_layer_nominal");

    m.positionPolicy = r.str(data, "position_policy", "");
    json const& range = r.object(r.required(data, "audio_tokens_range", ""), "audio_tokens_range");
    m.audioTokensRange.min = r.integer(range, "min", "audio_tokens_range");
    m.audioTokensRange.opt = r.integer(range, "opt", "audio_tokens_range");
    m.audioTokensRange.max = r.integer(range, "max", "audio_tokens_range");
    if (!(1 <= m.audioTokensRange.min && m.audioTokensRange.min <= m.audioTokensRange.opt
            && m.audioTokensRange.opt <= m.audioTokensRange.max))
    {
        r.fail("audio_tokens_range", "is invalid (it needs 1 <= MIN <= OPT <= MAX)");
    }
    m.dtype = r.str(data, "dtype", "");
    m.opset = r.integer(data, "opset", "");

    json const& graphs = r.dict(r.required(data, "graphs", ""), "graphs");
    for (auto it = graphs.begin(); it != graphs.end(); ++it)
    {
        m.graphs[it.key()] = readGraph(r, it.value(), "graphs." + it.key());
    }

    json const& plugin = r.object(r.required(data, "plugin", ""), "plugin");
    m.plugin.op = r.str(plugin, "op", "plugin");
    m.plugin.domain = r.str(plugin, "domain", "plugin");
    m.plugin.pluginVersion = r.str(plugin, "plugin_version", "plugin");
    m.plugin.pluginNamespace = r.str(plugin, "plugin_namespace", "plugin");
    r.strings(plugin, "attributes", "plugin");
    r.str(plugin, "standard_op_body", "plugin");
    m.plugin.maxAudioTokens = r.integer(plugin, "max_audio_tokens", "plugin");

    json const& limits = r.object(r.required(data, "limits", ""), "limits");
    struct
    {
        char const* key;
        int64_t* field;
    } limitFields[] = {{"max_batch", &m.limits.maxBatch}, {"max_text_tokens", &m.limits.maxTextTokens},
        {"max_new_tokens", &m.limits.maxNewTokens}};
    for (auto const& f : limitFields)
    {
        if (json const* value = r.optional(limits, f.key))
        {
            *f.field = r.integer(*value, std::string("limits.") + f.key);
            if (*f.field < 1)
            {
                r.fail("limits", std::string("is invalid (") + f.key + " must be >= 1)");
            }
        }
    }

    if (json const* rule = r.optional(data, "length_rule"))
    {
        json const& rules = r.dict(*rule, "length_rule");
        for (auto it = rules.begin(); it != rules.end(); ++it)
        {
            r.str(it.value(), "length_rule." + it.key());
        }
    }
    if (json const* engines = r.optional(data, "engines"))
    {
        json const& entries = r.dict(*engines, "engines");
        for (auto it = entries.begin(); it != entries.end(); ++it) // nlohmann objects iterate in key order
        {
            m.engines.push_back(readEngine(r, it.key(), it.value(), "engines." + it.key()));
        }
    }
    checkConsistency(r, m);
    return m;
}

Manifest loadManifest(std::string const& directory)
{
    struct stat info{};
    if (directory.empty() || stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
    {
        throw Error(Status::kManifest,
            directory + " is not a directory; point at a directory written by `export-engine`");
    }
    std::string path = directory + "/" + kManifestName;
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw Error(Status::kManifest,
            std::string("no ") + kManifestName + " in " + directory + ": point at a directory written by `export-engine`");
    }
    std::ostringstream text;
    text << in.rdbuf();
    Manifest m = parseManifest(text.str(), path);
    m.directory = directory;
    return m;
}

void verifyEngineFiles(Manifest const& manifest, EngineEntry const& entry, bool hashes)
{
    for (auto const& [role, engine] : entry.graphs)
    {
        std::string path = manifest.directory + "/" + engine.file;
        std::string what = role + " engine " + engine.file + " (" + entry.key + ")";
        struct stat info{};
        if (stat(path.c_str(), &info) != 0)
        {
            throw Error(Status::kManifest,
                what + " listed in " + kManifestName + " is missing from " + manifest.directory + "; re-run export-engine");
        }
        bool same = static_cast<int64_t>(info.st_size) == engine.bytes && (!hashes || sha256File(path) == engine.sha256);
        if (!same)
        {
            throw Error(Status::kManifest,
                path + " does not match the " + (hashes ? "hash" : "size") + " in " + kManifestName
                    + " (modified or partly copied); re-run export-engine");
        }
    }
}

int64_t dtypeBytes(std::string const& name)
{
    if (name == "float32" || name == "int32")
    {
        return 4;
    }
    if (name == "float16" || name == "bfloat16")
    {
        return 2;
    }
    if (name == "int64" || name == "float64")
    {
        return 8;
    }
    if (name == "int8" || name == "uint8" || name == "bool")
    {
        return 1;
    }
    return 0;
}

int64_t precisionBytes(std::string const& precision)
{
    if (precision == "fp32")
    {
        return 4;
    }
    if (precision == "fp16" || precision == "bf16")
    {
        return 2;
    }
    return 0;
}

} // namespace fastadasp
