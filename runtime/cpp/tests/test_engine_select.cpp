// Engine selection: compute capability parsing, version matching, the choice, and the one-line error that lists
// what the directory holds and the export-engine command that builds the missing engines.
#include "engine_select.h"
#include "errors.h"
#include "manifest.h"
#include "test_support.h"

#include <gtest/gtest.h>

using namespace fastadasp;
using fastadasp::testing::exampleManifest;
using nlohmann::json;

namespace
{

json engineEntry(std::string const& flavor, std::string const& version, std::string const& target)
{
    json file = {{"file", "x.engine"}, {"sha256", "00"}, {"bytes", 1}, {"cache_key", "k"}, {"build_seconds", 1.5},
        {"profile", json::object()}};
    return {{"flavor", flavor}, {"toolkit_version", version}, {"compute_capability", target}, {"precision", "fp32"},
        {"plugin_libraries", json::array()}, {"graphs", {{"prefill", file}, {"decode", file}}}};
}

Manifest withEngines()
{
    json data = exampleManifest();
    data["engines"]["tensorrt-10.14.1.48/NVIDIA H100 80GB HBM3 sm9.0"]
        = engineEntry("tensorrt", "10.14.1.48", "NVIDIA H100 80GB HBM3 sm9.0");
    data["engines"]["tensorrt-10.13.0.35/8.6"] = engineEntry("tensorrt", "10.13.0.35", "8.6");
    data["engines"]["tensorrt-rtx-1.7.1.116/8.9"] = engineEntry("tensorrt-rtx", "1.7.1.116", "8.9");
    Manifest m = parseManifest(data.dump(), "/exports/llama/manifest.json");
    m.directory = "/exports/llama";
    return m;
}

Platform platform(std::string const& version, std::string const& cc)
{
    Platform p;
    p.toolkitVersion = version;
    p.computeCapability = cc;
    p.source = "assumed";
    return p;
}

bool has(std::string const& text, std::string const& part)
{
    return text.find(part) != std::string::npos;
}

} // namespace

TEST(EngineSelection, NormalisesComputeCapabilities)
{
    EXPECT_EQ(normalizeComputeCapability("8.6"), "8.6");
    EXPECT_EQ(normalizeComputeCapability("86"), "8.6");
    EXPECT_EQ(normalizeComputeCapability("sm86"), "8.6");
    EXPECT_EQ(normalizeComputeCapability("SM_90"), "9.0");
    EXPECT_EQ(normalizeComputeCapability("sm_90a"), "9.0");
    EXPECT_EQ(normalizeComputeCapability("12.0"), "12.0");
    EXPECT_EQ(normalizeComputeCapability("sm120"), "12.0");
    EXPECT_EQ(normalizeComputeCapability("portable"), "");
    EXPECT_EQ(normalizeComputeCapability("8.66"), "");
    EXPECT_EQ(normalizeComputeCapability(""), "");

    EngineEntry e;
    e.computeCapability = "NVIDIA H100 80GB HBM3 sm9.0"; // TensorRT's build-device name (engines/toolkit.py)
    EXPECT_EQ(entryComputeCapability(e), "9.0");
    e.computeCapability = "NVIDIA GeForce RTX 4090 sm8.9";
    EXPECT_EQ(entryComputeCapability(e), "8.9");
    e.computeCapability = "8.6";
    EXPECT_EQ(entryComputeCapability(e), "8.6");
    e.computeCapability = "portable";
    EXPECT_EQ(entryComputeCapability(e), "");
    e.computeCapability = "unknown-gpu";
    EXPECT_EQ(entryComputeCapability(e), "");
}

TEST(EngineSelection, MatchesTensorRTVersionsOnMajorMinorPatch)
{
    EXPECT_TRUE(toolkitVersionsMatch("10.14.1.48", "10.14.1"));
    EXPECT_TRUE(toolkitVersionsMatch("10.14.1", "10.14.1.48"));
    EXPECT_FALSE(toolkitVersionsMatch("10.13.0.35", "10.14.1"));
    EXPECT_FALSE(toolkitVersionsMatch("10.14", "10.14.1"));
    EXPECT_FALSE(toolkitVersionsMatch("unknown", "10.14.1"));
}

TEST(EngineSelection, ChoosesTheEntryForThisGpuAndToolkit)
{
    Manifest m = withEngines();
    EngineChoice choice = chooseEngine(m, platform("10.14.1", "9.0"));
    ASSERT_NE(choice.entry, nullptr) << choice.reason;
    EXPECT_EQ(choice.entry->key, "tensorrt-10.14.1.48/NVIDIA H100 80GB HBM3 sm9.0");
    EXPECT_TRUE(choice.checked);
    EXPECT_EQ(choice.entries.size(), 3u);

    choice = chooseEngine(m, platform("10.13.0", "8.6"));
    ASSERT_NE(choice.entry, nullptr);
    EXPECT_EQ(choice.entry->key, "tensorrt-10.13.0.35/8.6");
    EXPECT_EQ(&selectEngine(m, platform("10.13.0", "8.6")), choice.entry);
}

TEST(EngineSelection, AMismatchListsTheEntriesAndTheBuildCommand)
{
    Manifest m = withEngines();
    try
    {
        selectEngine(m, platform("10.14.1", "8.9"));
        FAIL() << "no entry fits TensorRT 10.14.1 on 8.9";
    }
    catch (Error const& e)
    {
        std::string message = e.what();
        EXPECT_EQ(e.status(), Status::kNoEngine);
        EXPECT_TRUE(has(message, "no engine in /exports/llama for TensorRT 10.14.1 on compute capability 8.9")) << message;
        EXPECT_TRUE(has(message, "tensorrt-10.14.1.48/NVIDIA H100 80GB HBM3 sm9.0 (built for compute capability 9.0, "
                                 "this GPU is 8.9)"))
            << message;
        EXPECT_TRUE(has(message, "tensorrt-10.13.0.35/8.6 (built with TensorRT 10.13.0.35, this runtime has TensorRT "
                                 "10.14.1)"))
            << message;
        EXPECT_TRUE(has(message, "tensorrt-rtx-1.7.1.116/8.9 (a TensorRT-RTX engine; this runtime is built against "
                                 "TensorRT 10"))
            << message;
        EXPECT_TRUE(has(message, "export-engine --model tiny-llama --schedule decay --ratio 0.3 --start-layer 2"))
            << message;
        EXPECT_TRUE(has(message, "--compute-capability 8.9 --out /exports/llama")) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos); // one line
    }
}

TEST(EngineSelection, ExplainsEveryOtherCase)
{
    Manifest m = withEngines();
    EngineChoice unknown = chooseEngine(m, Platform{});
    EXPECT_EQ(unknown.entry, nullptr);
    EXPECT_TRUE(has(unknown.reason, "the GPU and TensorRT version are unknown")) << unknown.reason;
    EXPECT_TRUE(has(unknown.buildCommand, "--compute-capability X.Y"));

    EngineChoice byKey = chooseEngine(m, Platform{}, "tensorrt-10.13.0.35/8.6");
    ASSERT_NE(byKey.entry, nullptr);
    EXPECT_FALSE(byKey.checked);
    EngineChoice rtx = chooseEngine(m, platform("10.14.1", "8.9"), "tensorrt-rtx-1.7.1.116/8.9");
    EXPECT_EQ(rtx.entry, nullptr);
    EXPECT_TRUE(has(rtx.reason, "cannot run here: a TensorRT-RTX engine")) << rtx.reason;
    EngineChoice missing = chooseEngine(m, platform("10.14.1", "9.0"), "tensorrt-9.0/7.5");
    EXPECT_EQ(missing.entry, nullptr);
    EXPECT_TRUE(has(missing.reason, "no engine entry 'tensorrt-9.0/7.5'")) << missing.reason;

    Manifest none = parseManifest(exampleManifest().dump(), "/e/manifest.json");
    none.directory = "/e";
    EngineChoice empty = chooseEngine(none, platform("10.14.1", "9.0"));
    EXPECT_EQ(empty.entry, nullptr);
    EXPECT_TRUE(has(empty.reason, "/e holds no engines (exported with --skip-engines or without TensorRT)"))
        << empty.reason;
}

TEST(EngineSelection, BuildCommandRecreatesTheExport)
{
    Manifest m = withEngines();
    EXPECT_EQ(buildEngineCommand(m, "9.0"),
        "export-engine --model tiny-llama --schedule decay --ratio 0.3 --start-layer 2 --dtype fp32 --opset 17 "
        "--position-policy reference --audio-tokens-range 1:1500:3000 --max-batch 5 --max-text-tokens 512 "
        "--max-new-tokens 256 --compute-capability 9.0 --out /exports/llama");
    m.model.name = "wavllm";
    m.schedule.flopsTarget = 0.5;
    m.directory = "/my exports/w";
    std::string command = buildEngineCommand(m, "8.6");
    EXPECT_TRUE(has(command, "--model wavllm --model-path CHECKPOINT --schedule decay --flops-target 0.5")) << command;
    EXPECT_TRUE(has(command, "--out '/my exports/w'")) << command;
}
