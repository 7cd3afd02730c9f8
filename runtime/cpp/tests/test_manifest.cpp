// Manifest reading: the fields, the version refusal, missing / mistyped keys named with their path, graph
// bindings, engine file checks, SHA-256 and the fp16 / bf16 conversions the executor uses.
#include "bindings.h"
#include "errors.h"
#include "half.h"
#include "manifest.h"
#include "sha256.h"
#include "test_support.h"

#include <gtest/gtest.h>

using namespace fastadasp;
using fastadasp::testing::exampleExport;
using fastadasp::testing::exampleManifest;
using fastadasp::testing::TempDir;
using nlohmann::json;

namespace
{

// The message of the Error `body` throws; fails the test when it throws none or another status.
template <typename Body>
std::string errorOf(Body&& body, Status status = Status::kManifest)
{
    try
    {
        body();
    }
    catch (Error const& e)
    {
        EXPECT_EQ(static_cast<int>(e.status()), static_cast<int>(status)) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "no fastadasp::Error thrown";
    return "";
}

std::string parseError(json const& data)
{
    return errorOf([&] { parseManifest(data.dump(), "m.json"); });
}

} // namespace

TEST(Manifest, ReadsTheExampleExport)
{
    Manifest m = loadManifest(exampleExport());
    EXPECT_EQ(m.model.name, "tiny-llama");
    EXPECT_EQ(m.model.args.numLayers, 5);
    EXPECT_EQ(m.model.args.numKvHeads, 1);
    EXPECT_EQ(m.model.args.headDim, 24);
    EXPECT_EQ(m.model.args.maxPositionEmbeddings, 2048);
    EXPECT_FALSE(m.model.promptLora);
    EXPECT_EQ(m.schedule.ratioNumerators, (std::vector<int64_t>{0, 0, 19661, 9831, 0}));
    EXPECT_EQ(m.schedule.ratioDenominator, 65536);
    EXPECT_FALSE(m.schedule.flopsTarget.has_value());
    EXPECT_EQ(m.dtype, "fp32");
    EXPECT_EQ(m.audioTokensRange.max, 3000);
    EXPECT_EQ(m.limits.maxBatch, 5);
    EXPECT_EQ(m.limits.maxTextTokens, 512);
    EXPECT_EQ(m.limits.maxNewTokens, 256);
    EXPECT_TRUE(m.engines.empty());
    EXPECT_EQ(m.graph("decode").inputs.at("past.3.key").shape[2].name, "capacity_3");
    EXPECT_NO_THROW(bindings::checkGraphBindings(m));
}

TEST(Manifest, RefusesOtherVersionsNamingTheReader)
{
    json data = exampleManifest();
    data["version"] = 1;
    std::string message = parseError(data);
    EXPECT_NE(message.find("manifest version 1 (it is read by fastadasp 0.1.x)"), std::string::npos) << message;
    EXPECT_NE(message.find("reads version 2 (fastadasp 0.2.x)"), std::string::npos) << message;

    data["version"] = 3;
    message = parseError(data);
    EXPECT_NE(message.find("manifest version 3 (no fastadasp release reads it)"), std::string::npos) << message;

    data["version"] = "2";
    EXPECT_NE(parseError(data).find("manifest version \"2\""), std::string::npos);
    data.erase("version");
    EXPECT_NE(parseError(data).find("manifest version None"), std::string::npos);
}

TEST(Manifest, RefusesOtherFormats)
{
    json data = exampleManifest();
    data["format"] = "onnx";
    EXPECT_NE(parseError(data).find("is not a fastadasp manifest (format \"onnx\")"), std::string::npos);
    EXPECT_NE(parseError(json::array()).find("is not a fastadasp manifest (format list)"), std::string::npos);
    std::string message = errorOf([] { parseManifest("{not json", "m.json"); });
    EXPECT_NE(message.find("m.json is not valid JSON"), std::string::npos) << message;
}

TEST(Manifest, NamesMissingAndMistypedKeys)
{
    json data = exampleManifest();
    data["model"]["args"].erase("num_layers");
    EXPECT_NE(parseError(data).find("'model.args.num_layers' is missing"), std::string::npos);

    data = exampleManifest();
    data["model"]["args"]["num_kv_heads"] = "1";
    EXPECT_NE(parseError(data).find("'model.args.num_kv_heads' must be int, not str"), std::string::npos);

    data = exampleManifest();
    data["opset"] = true;
    EXPECT_NE(parseError(data).find("'opset' must be int, not bool"), std::string::npos);

    data = exampleManifest();
    data["schedule"].erase("flops_target"); // float | None without a default: the key must be there
    EXPECT_NE(parseError(data).find("'schedule.flops_target' is missing"), std::string::npos);

    data = exampleManifest();
    data["graphs"]["decode"]["inputs"]["past.1.key"]["shape"][1] = 1.5;
    EXPECT_NE(parseError(data).find("'graphs.decode.inputs.past.1.key.shape[1]' must be int, not float"),
        std::string::npos);

    data = exampleManifest();
    data["limits"].erase("max_batch"); // ServingLimits fields have defaults
    EXPECT_EQ(parseManifest(data.dump(), "m.json").limits.maxBatch, 5);
}

TEST(Manifest, ChecksWhatTheRuntimeNeeds)
{
    json data = exampleManifest();
    data["schedule"]["ratio_numerators"] = {0, 0, 19661, 9831};
    EXPECT_NE(parseError(data).find("has 4 entries but model.args.num_layers is 5"), std::string::npos);

    data = exampleManifest();
    data["schedule"]["ratio_numerators"][2] = 65536;
    EXPECT_NE(parseError(data).find("outside [0, ratio_denominator)"), std::string::npos);

    data = exampleManifest();
    data["dtype"] = "int8";
    EXPECT_NE(parseError(data).find("not one of fp32, fp16, bf16"), std::string::npos);

    data = exampleManifest();
    data["audio_tokens_range"]["min"] = 0;
    EXPECT_NE(parseError(data).find("audio_tokens_range is invalid"), std::string::npos);

    data = exampleManifest();
    data["graphs"].erase("decode");
    EXPECT_NE(parseError(data).find("has no 'decode' graph"), std::string::npos);
}

TEST(Manifest, ChecksTheGraphBindings)
{
    json data = exampleManifest();
    data["graphs"]["decode"]["inputs"].erase("past.2.key");
    Manifest m = parseManifest(data.dump(), "m.json");
    std::string message = errorOf([&] { bindings::checkGraphBindings(m); });
    EXPECT_NE(message.find("graphs.decode.inputs has no 'past.2.key'"), std::string::npos) << message;

    data = exampleManifest();
    data["graphs"]["prefill"]["outputs"]["present.4.value"]["shape"][3] = 32;
    m = parseManifest(data.dump(), "m.json");
    message = errorOf([&] { bindings::checkGraphBindings(m); });
    EXPECT_NE(message.find("'present.4.value' is not [batch, 1, length, 24]"), std::string::npos) << message;

    EXPECT_EQ(bindings::decodeInputs(2, true),
        (std::vector<std::string>{"input_ids", "position_ids", "cache_lengths", "lora_scale", "past.0.key",
            "past.0.value", "past.1.key", "past.1.value"}));
    EXPECT_EQ(bindings::prefillOutputs(1), (std::vector<std::string>{"logits", "present.0.key", "present.0.value"}));
}

TEST(Manifest, LoadNamesTheDirectoryProblem)
{
    std::string message = errorOf([] { loadManifest("/nonexistent/export"); });
    EXPECT_NE(message.find("/nonexistent/export is not a directory"), std::string::npos) << message;
    TempDir dir;
    message = errorOf([&] { loadManifest(dir.path()); });
    EXPECT_NE(message.find("no manifest.json in " + dir.path()), std::string::npos) << message;
}

TEST(Manifest, ReadsEngineEntriesAndChecksTheirFiles)
{
    TempDir dir;
    std::string bytes = "not really an engine";
    dir.write("prefill.90.engine", bytes);
    json data = exampleManifest();
    json file = {{"file", "prefill.90.engine"}, {"sha256", sha256Hex(bytes.data(), bytes.size())},
        {"bytes", bytes.size()}, {"cache_key", "k"}, {"build_seconds", nullptr},
        {"profile", {{"prefix_ids", {{1, 1}, {1, 48}, {5, 512}}}}}};
    data["engines"]["tensorrt-10.14.1.48/9.0"] = {{"flavor", "tensorrt"}, {"toolkit_version", "10.14.1.48"},
        {"compute_capability", "9.0"}, {"precision", "fp32"},
        {"plugin_libraries", {{{"file", "/opt/libwm.so"}, {"sha256", "00"}}}}, {"graphs", {{"prefill", file}}}};
    dir.writeManifest(data);
    Manifest m = loadManifest(dir.path());
    ASSERT_EQ(m.engines.size(), 1u);
    EngineEntry const& entry = m.engines[0];
    EXPECT_EQ(entry.key, "tensorrt-10.14.1.48/9.0");
    EXPECT_EQ(entry.pluginLibraries.at(0).file, "/opt/libwm.so");
    EXPECT_EQ(entry.graphs.at("prefill").profile.at("prefix_ids").max, (std::vector<int64_t>{5, 512}));
    EXPECT_NO_THROW(verifyEngineFiles(m, entry, true));

    dir.write("prefill.90.engine", "not really an engine!"); // another size
    EXPECT_NE(errorOf([&] { verifyEngineFiles(m, entry, false); }).find("does not match the size"), std::string::npos);
    dir.write("prefill.90.engine", "NOT really an engine"); // same size, other bytes
    EXPECT_NO_THROW(verifyEngineFiles(m, entry, false));
    EXPECT_NE(errorOf([&] { verifyEngineFiles(m, entry, true); }).find("does not match the hash"), std::string::npos);
    std::filesystem::remove(dir.path() + "/prefill.90.engine");
    EXPECT_NE(errorOf([&] { verifyEngineFiles(m, entry, true); }).find("is missing from"), std::string::npos);

    data["engines"]["tensorrt-10.14.1.48/9.0"]["graphs"]["prefill"]["profile"]["prefix_ids"] = {{1, 1}, {5, 512}};
    EXPECT_NE(parseError(data).find("must hold [min, opt, max] shapes"), std::string::npos);
}

TEST(Sha256, MatchesKnownDigests)
{
    EXPECT_EQ(sha256Hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256Hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::string twoBlocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    EXPECT_EQ(sha256Hex(twoBlocks.data(), twoBlocks.size()),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    TempDir dir;
    std::string big(3 << 20, 'a'); // more than one read chunk
    EXPECT_EQ(sha256File(dir.write("big", big)), sha256Hex(big.data(), big.size()));
}

TEST(HalfPrecision, RoundsToNearestEven)
{
    EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
    EXPECT_EQ(floatToHalf(-2.0f), 0xc000);
    EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
    EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);            // rounds up to infinity
    EXPECT_EQ(floatToHalf(5.9604645e-8f), 0x0001);       // the smallest subnormal
    EXPECT_EQ(floatToHalf(1.0f + 1.0f / 2048.0f), 0x3c00); // a tie goes to the even mantissa
    EXPECT_EQ(floatToHalf(1.0f + 3.0f / 2048.0f), 0x3c02);
    EXPECT_EQ(halfToFloat(0x3555), 0.333251953125f);
    EXPECT_EQ(halfToFloat(0x0001), 5.9604645e-8f);
    for (uint32_t h = 0; h < 0x7c00; ++h) // every finite half survives the round trip
    {
        ASSERT_EQ(floatToHalf(halfToFloat(static_cast<uint16_t>(h))), h);
    }
    EXPECT_EQ(floatToBfloat16(1.0f), 0x3f80);
    EXPECT_EQ(floatToBfloat16(1.00390625f), 0x3f80); // tie to even
    EXPECT_EQ(floatToBfloat16(1.01171875f), 0x3f82);
    EXPECT_EQ(bfloat16ToFloat(0x4049), 3.140625f);
}
