// manifest.json, version 2: the contract between export-engine and every runtime. The fields mirror the
// dataclasses in fastadasp/core/manifest.py (published as fastadasp/core/manifest.schema.json); only what a
// runtime needs is kept, but every required key of those dataclasses is checked, so a manifest the Python side
// refuses is refused here too, with the same kind of one-line message.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fastadasp
{

constexpr char const* kManifestFormat = "fastadasp-manifest";
constexpr int kManifestVersion = 2;
constexpr char const* kManifestName = "manifest.json";
// The fastadasp release whose exports this runtime reads (names it in the version refusal).
constexpr char const* kReaderRelease = "fastadasp 0.2.x";

// Which fastadasp release reads a manifest version (fastadasp/core/manifest.py: READERS); nullptr when none.
char const* manifestReader(int64_t version);

struct Dim
{
    int64_t value = -1; // fixed size, or -1 when symbolic
    std::string name;   // the dynamic dim's name ("batch", "capacity_3")
};

struct TensorSpec
{
    std::string dtype; // numpy name: float32, float16, bfloat16, int64
    std::vector<Dim> shape;
};

struct GraphEntry
{
    std::string file;
    std::vector<std::string> files;
    std::map<std::string, TensorSpec> inputs;
    std::map<std::string, TensorSpec> outputs;
};

struct ProfileRange
{
    std::vector<int64_t> min, opt, max;
};

struct EngineFile
{
    std::string file;
    std::string sha256;
    int64_t bytes = 0;
    std::string cacheKey;
    std::map<std::string, ProfileRange> profile; // input name -> [min, opt, max]
};

struct PluginLibrary
{
    std::string file; // absolute path the engine build loaded
    std::string sha256;
};

struct EngineEntry
{
    std::string key; // "<flavor>-<version>/<target>"
    std::string flavor;
    std::string toolkitVersion;
    std::string computeCapability; // "8.6", "portable", or TensorRT's build device ("NVIDIA H100 ... sm9.0")
    std::string precision;
    std::vector<PluginLibrary> pluginLibraries;
    std::map<std::string, EngineFile> graphs; // role ("prefill", "decode", "audio_encoder") -> engine
};

struct ModelArgs
{
    int64_t vocabSize = 0;
    int64_t hiddenSize = 0;
    int64_t numLayers = 0;
    int64_t numHeads = 0;
    int64_t numKvHeads = 0;
    int64_t headDim = 0;
    int64_t intermediateSize = 0;
    int64_t maxPositionEmbeddings = 4096;
};

struct ModelEntry
{
    std::string name;
    std::string family;
    ModelArgs args;
    bool promptLora = false; // WavLLM: the graphs take lora_scale [B, D]
    std::string configHash;
};

struct ScheduleEntry
{
    std::string kind;
    int64_t startLayer = 0;
    double baseRatio = 0.0;
    std::vector<int64_t> ratioNumerators; // layer i merges with ratio q[i] / ratioDenominator
    int64_t ratioDenominator = 65536;
    std::optional<double> flopsTarget;
    int64_t nominalAudioTokens = 0;
};

struct AudioTokenRange
{
    int64_t min = 1;
    int64_t opt = 1;
    int64_t max = 1;
};

struct ServingLimits
{
    int64_t maxBatch = 5;       // rows per call: batch x beams
    int64_t maxTextTokens = 512; // prefix + suffix tokens
    int64_t maxNewTokens = 256;  // decode steps (KV capacity beyond the prompt)
};

struct PluginEntry
{
    std::string op;
    std::string domain;
    std::string pluginVersion;
    std::string pluginNamespace;
    int64_t maxAudioTokens = 0;
};

struct Manifest
{
    std::string source;    // the manifest.json path (for messages)
    std::string directory; // the export directory ("" when parsed from text)
    std::string fastadaspVersion;
    ModelEntry model;
    ScheduleEntry schedule;
    std::string positionPolicy;
    AudioTokenRange audioTokensRange;
    std::string dtype; // fp32 | fp16 | bf16
    int64_t opset = 0;
    std::map<std::string, GraphEntry> graphs;
    PluginEntry plugin;
    ServingLimits limits;
    std::vector<EngineEntry> engines; // sorted by key
    int64_t version = kManifestVersion;

    EngineEntry const* findEngine(std::string const& key) const;
    // The graph of a role; Error(kManifest) naming the role when the export has none.
    GraphEntry const& graph(std::string const& role) const;
};

// Parse and check a manifest's text. `source` names it in messages. Throws Error(kManifest).
Manifest parseManifest(std::string const& text, std::string const& source);

// Read `directory`/manifest.json. Throws Error(kManifest) with the fix in one line.
Manifest loadManifest(std::string const& directory);

// Check that the engine files of `entry` exist, have the recorded size and (when `hashes`) SHA-256.
void verifyEngineFiles(Manifest const& manifest, EngineEntry const& entry, bool hashes);

// Bytes per element of a numpy dtype name (float32 4, float16 2, bfloat16 2, int64 8, ...); 0 when unknown.
int64_t dtypeBytes(std::string const& numpyName);

// Bytes per element of a manifest precision (fp32 4, fp16 2, bf16 2); 0 when unknown.
int64_t precisionBytes(std::string const& precision);

} // namespace fastadasp
