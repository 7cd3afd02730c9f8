// The length rule against hand-computed cases and the manifest's own nominal plan; the KV planner's lengths,
// capacities and bytes; request limits and engine profiles.
#include "errors.h"
#include "kv_plan.h"
#include "length_rule.h"
#include "manifest.h"
#include "test_support.h"

#include <gtest/gtest.h>

using namespace fastadasp;
using fastadasp::testing::exampleExport;
using fastadasp::testing::exampleManifest;

namespace
{

std::string limitError(Manifest const& m, RequestShape const& r)
{
    try
    {
        checkRequest(m, r);
    }
    catch (Error const& e)
    {
        return e.what();
    }
    return "";
}

} // namespace

TEST(LengthRule, MergedCountsByHand)
{
    EXPECT_EQ(numMerged(1500, 19661, 65536), 450); // 1500 * 19661 = 29491500; // 65536 = 450.0
    EXPECT_EQ(numMerged(1050, 9831, 65536), 157);  // 10322550 // 65536 = 157
    EXPECT_EQ(numMerged(3, 32768, 65536), 1);      // half of 3, floored
    EXPECT_EQ(numMerged(2, 32768, 65536), 1);
    EXPECT_EQ(numMerged(1, 32768, 65536), 0);      // a span keeps at least one token
    EXPECT_EQ(numMerged(0, 32768, 65536), 0);
    EXPECT_EQ(numMerged(10, 65535, 65536), 9);     // 655350 // 65536 = 9 = n - 1
    EXPECT_EQ(numMerged(65536, 1, 65536), 1);
    EXPECT_EQ(numMerged(65535, 1, 65536), 0);
    EXPECT_EQ(numMerged(7, 0, 65536), 0);
    EXPECT_EQ(numMerged(1000000000, 65535, 65536), 999984741); // no int64 overflow
    EXPECT_EQ(numMerged(5, 3, 4), 3);                          // any denominator: 15 // 4
}

TEST(LengthRule, SpanLengthsMatchTheManifestsNominalPlan)
{
    Manifest m = loadManifest(exampleExport());
    auto data = exampleManifest();
    auto nominal = data["schedule"]["tokens_per_layer_nominal"].get<std::vector<int64_t>>();
    EXPECT_EQ(spanLengths(m.schedule.ratioNumerators, m.schedule.ratioDenominator, m.schedule.nominalAudioTokens), nominal);
    EXPECT_EQ(nominal, (std::vector<int64_t>{1500, 1500, 1500, 1050, 893, 893}));
}

TEST(LengthRule, ChainsLayersAndAddsText)
{
    std::vector<int64_t> q{32768, 32768, 0, 65535};
    EXPECT_EQ(spanLengths(q, 65536, 7), (std::vector<int64_t>{7, 4, 2, 2, 1}));
    EXPECT_EQ(spanLengths(q, 65536, 1), (std::vector<int64_t>{1, 1, 1, 1, 1}));
    EXPECT_EQ(prefillKvLengths(q, 65536, 3, 7, 2), (std::vector<int64_t>{12, 9, 7, 7}));
    EXPECT_EQ(spanLengths({}, 65536, 9), (std::vector<int64_t>{9}));
    EXPECT_EQ(decodePosition(3, 7, 2, 0), 12); // the full prompt, whatever was merged
    EXPECT_EQ(decodePosition(3, 7, 2, 5), 17);
}

TEST(KvPlanner, LengthsCapacitiesAndBytes)
{
    ModelGeometry g;
    g.ratioNumerators = {0, 32768, 19661};
    g.numKvHeads = 2;
    g.headDim = 8;
    g.kvElementBytes = 2;
    RequestShape r{2, 3, 5, 100, 4, 16};
    KvPlan plan = planKv(g, r, needsSecondKvSet(r.numBeams, true));
    EXPECT_EQ(plan.rows, 6);
    // n = 100, 100, 50, then 50 - 50 * 19661 // 65536 = 50 - 15 = 35 (983050 // 65536 = 15)
    ASSERT_EQ(plan.layers.size(), 3u);
    EXPECT_EQ(plan.layers[0].audioTokens, 100);
    EXPECT_EQ(plan.layers[1].merged, 50);
    EXPECT_EQ(plan.layers[2].audioTokens, 50);
    EXPECT_EQ(plan.layers[2].merged, 15);
    EXPECT_EQ(plan.audioTokensAfterLastLayer, 35);
    EXPECT_EQ(plan.prefillLengths(), (std::vector<int64_t>{109, 109, 59}));
    EXPECT_EQ(plan.capacities(), (std::vector<int64_t>{125, 125, 75}));
    EXPECT_EQ(plan.layers[2].kvBytes, 2 * 6 * 2 * 75 * 8 * 2);
    EXPECT_EQ(plan.kvBytes, 2 * 6 * 2 * (125 + 125 + 75) * 8 * 2);
    EXPECT_EQ(plan.reorderBytes, plan.kvBytes); // beams gather into a second KV set
    EXPECT_EQ(plan.firstDecodePosition, 109);

    RequestShape greedy{1, 1, 5, 100, 4, 16};
    EXPECT_EQ(planKv(g, greedy, needsSecondKvSet(1, true)).reorderBytes, 0);
    EXPECT_GT(planKv(g, greedy, needsSecondKvSet(1, false)).reorderBytes, 0); // ping-pong decode
}

TEST(KvPlanner, GeometryFromTheManifest)
{
    Manifest m = loadManifest(exampleExport());
    ModelGeometry g = ModelGeometry::fromManifest(m);
    EXPECT_EQ(g.numLayers(), 5);
    EXPECT_EQ(g.kvElementBytes, 4);
    KvPlan plan = planKv(g, RequestShape{1, 1, 4, 1500, 4, 8}, false);
    EXPECT_EQ(plan.capacities(), (std::vector<int64_t>{1516, 1516, 1516, 1066, 909}));
    EXPECT_EQ(plan.kvBytes, 2 * 1 * 1 * (1516 * 3 + 1066 + 909) * 24 * 4);
}

TEST(KvPlanner, RequestsAreCheckedAgainstTheServingLimits)
{
    Manifest m = loadManifest(exampleExport()); // limits 5 / 512 / 256, audio 1:1500:3000, 2048 positions
    EXPECT_EQ(limitError(m, {1, 5, 10, 1000, 10, 256}), "");
    EXPECT_NE(limitError(m, {2, 3, 1, 100, 1, 8}).find("batch x beams = 6 rows, but this export serves at most 5"),
        std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 1, 100, 1, 257}).find("exceeds this export's decode budget of 256"), std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 500, 100, 13, 8}).find("513 text tokens"), std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 1, 3001, 1, 8}).find("outside this export's range 1:1500:3000"), std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 1, 0, 1, 8}).find("outside"), std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 8, 2000, 8, 64}).find("passes the model's 2048 positions; pass at most 32"),
        std::string::npos);
    EXPECT_NE(limitError(m, {0, 1, 1, 10, 1, 8}).find("batch must be >= 1"), std::string::npos);
    EXPECT_NE(limitError(m, {1, 1, 1, 10, 1, 0}).find("max_new_tokens must be >= 1"), std::string::npos);
}

TEST(KvPlanner, RequestsAreCheckedAgainstEngineProfiles)
{
    Manifest m = loadManifest(exampleExport());
    EngineEntry entry;
    entry.key = "tensorrt-10.14.1/9.0";
    EngineFile prefill;
    prefill.profile["prefix_ids"] = {{1, 1}, {1, 48}, {5, 512}};
    prefill.profile["audio_embeds"] = {{1, 1, 72}, {1, 1500, 72}, {5, 3000, 72}};
    prefill.profile["suffix_ids"] = {{1, 1}, {1, 16}, {5, 512}};
    EngineFile decode;
    for (int i = 0; i < 5; ++i)
    {
        decode.profile["past." + std::to_string(i) + ".key"] = {{1, 1, 1, 24}, {1, 1, 1600, 24}, {5, 1, 4000, 24}};
    }
    entry.graphs["prefill"] = prefill;
    entry.graphs["decode"] = decode;
    ModelGeometry g = ModelGeometry::fromManifest(m);
    EXPECT_NO_THROW(checkEngineProfiles(m, entry, planKv(g, {1, 5, 4, 1500, 4, 8}, true)));
    try
    {
        checkEngineProfiles(m, entry, planKv(g, {1, 1, 0, 100, 4, 8}, false));
        ADD_FAILURE() << "a zero-length prefix passed a profile whose minimum is 1";
    }
    catch (Error const& e)
    {
        EXPECT_EQ(e.status(), Status::kLimits);
        EXPECT_NE(std::string(e.what()).find("accepts prefix_ids from [1, 1] to [5, 512], but this request needs [1, 0]"),
            std::string::npos)
            << e.what();
    }
    decode.profile["past.0.key"] = {{1, 1, 1, 24}, {1, 1, 100, 24}, {5, 1, 1000, 24}};
    entry.graphs["decode"] = decode;
    EXPECT_THROW(checkEngineProfiles(m, entry, planKv(g, {1, 1, 4, 1500, 4, 8}, false)), Error);
}
