// The generation loop against golden outputs of the Python loop (fastadasp.runtime.generate) on the same hashed
// logits: tokens, beam scores and the number of decode steps (runtime/cpp/tests/golden/make_golden.py).
#include "errors.h"
#include "fake_executor.h"
#include "generate.h"
#include "kv_plan.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace fastadasp;
using fastadasp::testing::readText;
using fastadasp::testing::testData;
using nlohmann::json;

namespace
{

std::vector<int64_t> flatten(json const& rows)
{
    std::vector<int64_t> out;
    for (auto const& row : rows)
    {
        for (auto const& v : row)
        {
            out.push_back(v.get<int64_t>());
        }
    }
    return out;
}

struct Case
{
    ModelGeometry geometry;
    RequestShape request;
    GenerationConfig config;
    std::vector<int64_t> prefix, suffix;
    std::vector<float> audio;
    uint64_t seed = 0;
};

Case readCase(json const& c, int64_t hidden)
{
    Case k;
    k.geometry.ratioNumerators = c["ratio_numerators"].get<std::vector<int64_t>>();
    k.geometry.ratioDenominator = c["ratio_denominator"].get<int64_t>();
    k.geometry.vocabSize = c["vocab"].get<int64_t>();
    k.geometry.hiddenSize = hidden;
    k.geometry.headDim = 2;
    k.prefix = flatten(c["prefix_ids"]);
    k.suffix = flatten(c["suffix_ids"]);
    k.request.batch = c["batch"].get<int64_t>();
    k.request.numBeams = c["num_beams"].get<int64_t>();
    k.request.prefixTokens = static_cast<int64_t>(c["prefix_ids"][0].size());
    k.request.audioTokens = c["audio_tokens"].get<int64_t>();
    k.request.suffixTokens = static_cast<int64_t>(c["suffix_ids"][0].size());
    k.request.maxNewTokens = c["max_new_tokens"].get<int64_t>();
    k.audio.assign(static_cast<std::size_t>(k.request.batch * k.request.audioTokens * hidden), 0.0f);
    k.config.maxNewTokens = k.request.maxNewTokens;
    k.config.numBeams = k.request.numBeams;
    k.config.eosTokenIds = c["eos_token_ids"].get<std::vector<int64_t>>();
    k.config.hasPadTokenId = !c["pad_token_id"].is_null();
    k.config.padTokenId = k.config.hasPadTokenId ? c["pad_token_id"].get<int64_t>() : 0;
    k.config.lengthPenalty = c["length_penalty"].get<double>();
    k.config.earlyStopping = static_cast<EarlyStopping>(c["early_stopping"].get<int>());
    k.seed = c["seed"].get<uint64_t>();
    return k;
}

PrefillBatch batchOf(Case const& k)
{
    PrefillBatch b;
    b.batch = k.request.batch;
    b.prefixTokens = k.request.prefixTokens;
    b.audioTokens = k.request.audioTokens;
    b.suffixTokens = k.request.suffixTokens;
    b.hiddenSize = k.geometry.hiddenSize;
    b.prefixIds = k.prefix.data();
    b.audioEmbeds = k.audio.data();
    b.suffixIds = k.suffix.data();
    return b;
}

} // namespace

TEST(Generate, MatchesThePythonLoopOnGoldenCases)
{
    json golden = json::parse(readText(testData("golden/generate_cases.json")));
    int64_t hidden = golden["hidden_size"].get<int64_t>();
    ASSERT_GE(golden["cases"].size(), 20u);
    int beamCases = 0;
    for (auto const& c : golden["cases"])
    {
        SCOPED_TRACE(c["name"].get<std::string>());
        Case k = readCase(c, hidden);
        FakeExecutor fake(k.geometry.vocabSize, k.seed);
        KvPlan plan = planKv(k.geometry, k.request, needsSecondKvSet(k.request.numBeams, true));
        GenerationResult r = generate(fake, plan, k.geometry.vocabSize, batchOf(k), k.config);
        json const& expected = c["expected"];
        EXPECT_EQ(r.rows, k.request.batch);
        EXPECT_EQ(r.length, static_cast<int64_t>(expected["tokens"][0].size()));
        EXPECT_EQ(r.tokens, flatten(expected["tokens"]));
        EXPECT_EQ(r.decodeSteps, expected["decode_steps"].get<int64_t>());
        EXPECT_EQ(fake.decodeCalls(), r.decodeSteps);
        if (expected["scores"].is_null())
        {
            EXPECT_TRUE(r.scores.empty());
            continue;
        }
        ++beamCases;
        ASSERT_EQ(r.scores.size(), expected["scores"].size());
        for (std::size_t i = 0; i < r.scores.size(); ++i)
        {
            EXPECT_NEAR(r.scores[i], expected["scores"][i].get<double>(), 1e-4);
        }
        // expansion to beams, then one reorder before every decode step
        EXPECT_EQ(fake.reorderCalls(), r.decodeSteps + 1);
    }
    EXPECT_GE(beamCases, 10);
}

TEST(Generate, TheFakeSeesEveryLayersCacheLength)
{
    // The same request with one layer's ratio changed must change the tokens: the fake folds every layer's
    // prefill length (the length rule) and cache length into its logits.
    ModelGeometry g;
    g.ratioNumerators = {0, 32768};
    g.vocabSize = 64;
    g.hiddenSize = 4;
    RequestShape r{1, 1, 2, 50, 2, 12};
    std::vector<int64_t> prefix{1, 2}, suffix{3, 4};
    std::vector<float> audio(50 * 4, 0.0f);
    PrefillBatch b{1, 2, 50, 2, 4, prefix.data(), audio.data(), suffix.data(), nullptr};
    GenerationConfig config;
    config.maxNewTokens = 12;
    FakeExecutor first(64), second(64);
    GenerationResult a = generate(first, planKv(g, r, false), 64, b, config);
    g.ratioNumerators = {0, 32767};
    GenerationResult c = generate(second, planKv(g, r, false), 64, b, config);
    EXPECT_EQ(a.length, 12);
    EXPECT_NE(a.tokens, c.tokens);
}

TEST(Generate, KvLengthsGrowByOneAndStopAtCapacity)
{
    ModelGeometry g;
    g.ratioNumerators = {0, 32768, 65535};
    KvPlan plan = planKv(g, RequestShape{1, 1, 1, 9, 1, 2}, false);
    KvLengths kv(plan);
    EXPECT_EQ(kv.lengths(), (std::vector<int64_t>{11, 11, 7})); // n = 9, 9, 5: layer 1 merges for the layers above it
    kv.advance();
    EXPECT_EQ(kv.lengths(), (std::vector<int64_t>{12, 12, 8}));
    kv.advance();
    try
    {
        kv.checkRoom();
        FAIL() << "a full cache took another entry";
    }
    catch (Error const& e)
    {
        EXPECT_EQ(e.status(), Status::kLimits);
        EXPECT_NE(std::string(e.what()).find("layer 0's KV cache is full (13 of 13 entries)"), std::string::npos) << e.what();
    }
}

TEST(Generate, TheFakeRefusesWritesPastCapacity)
{
    ModelGeometry g;
    g.ratioNumerators = {0};
    g.vocabSize = 8;
    KvPlan plan = planKv(g, RequestShape{1, 1, 0, 3, 0, 1}, false);
    FakeExecutor fake(8);
    std::vector<float> audio(3, 0.0f), logits;
    fake.prefill(PrefillBatch{1, 0, 3, 0, 1, nullptr, audio.data(), nullptr, nullptr}, plan, logits);
    EXPECT_EQ(logits.size(), 8u);
    EXPECT_THROW(fake.decode({1}, {3}, {4}, logits), Error); // capacity is 3 + 1 = 4: index 4 is past it
    EXPECT_NO_THROW(fake.decode({1}, {3}, {3}, logits));
    EXPECT_THROW(fake.reorder({0, 1}), Error); // the plan sized one row
}

TEST(Generate, RejectsAPlanForAnotherRequest)
{
    ModelGeometry g;
    g.ratioNumerators = {0};
    g.vocabSize = 8;
    KvPlan plan = planKv(g, RequestShape{1, 1, 0, 3, 0, 2}, false);
    FakeExecutor fake(8);
    std::vector<float> audio(3, 0.0f);
    PrefillBatch b{1, 0, 3, 0, 1, nullptr, audio.data(), nullptr, nullptr};
    GenerationConfig config;
    config.maxNewTokens = 3;
    EXPECT_THROW(generate(fake, plan, 8, b, config), Error);
    config.maxNewTokens = 2;
    config.numBeams = 2;
    EXPECT_THROW(generate(fake, plan, 8, b, config), Error);
    config.numBeams = 0;
    EXPECT_THROW(generate(fake, plan, 8, b, config), Error);
}
