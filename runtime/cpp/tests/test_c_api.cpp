// The C API: statuses and messages instead of exceptions, planning-only handles, the fake executor end to end,
// and what a build without TensorRT says.
#include "fastadasp_runtime.h"
#include "runtime.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using fastadasp::testing::exampleExport;
using fastadasp::testing::exampleManifest;
using fastadasp::testing::TempDir;

namespace
{

bool lastErrorHas(std::string const& part)
{
    return std::string(fastadasp_last_error()).find(part) != std::string::npos;
}

fastadasp_runtime* openRuntime(std::string const& dir, int executor, char const* cc = nullptr, char const* trt = nullptr)
{
    fastadasp_options options;
    fastadasp_options_init(&options);
    options.export_dir = dir.c_str();
    options.executor = executor;
    options.assume_compute_capability = cc;
    options.assume_tensorrt_version = trt;
    fastadasp_runtime* runtime = nullptr;
    EXPECT_EQ(fastadasp_create(&options, &runtime), FASTADASP_OK) << fastadasp_last_error();
    return runtime;
}

} // namespace

TEST(CApi, PlansWithoutAGpu)
{
    fastadasp_runtime* rt = openRuntime(exampleExport(), FASTADASP_EXECUTOR_NONE);
    ASSERT_NE(rt, nullptr);
    fastadasp_model_info info;
    ASSERT_EQ(fastadasp_model(rt, &info), FASTADASP_OK);
    EXPECT_EQ(info.num_layers, 5);
    EXPECT_EQ(info.hidden_size, 72);
    EXPECT_EQ(info.vocab_size, 256);
    EXPECT_EQ(info.max_batch, 5);
    EXPECT_STREQ(fastadasp_engine_key(rt), "");

    fastadasp_request_shape shape{1, 1, 4, 1500, 4, 8};
    char* json = nullptr;
    ASSERT_EQ(fastadasp_plan_json(rt, &shape, &json), FASTADASP_OK) << fastadasp_last_error();
    auto report = nlohmann::json::parse(json);
    fastadasp_free_string(json);
    EXPECT_EQ(report["capacities"], nlohmann::json({1516, 1516, 1516, 1066, 909}));
    EXPECT_EQ(report["audio_tokens_per_layer"], nlohmann::json({1500, 1500, 1500, 1050, 893, 893}));
    EXPECT_EQ(report["layers"][3]["merged"], 157);
    EXPECT_EQ(report["kv_bytes_total"], 2 * (1516 * 3 + 1066 + 909) * 24 * 4);
    EXPECT_TRUE(report["engine"]["chosen"].is_null());
    EXPECT_EQ(report["manifest"]["model"]["name"], "tiny-llama");

    shape.num_beams = 6;
    EXPECT_EQ(fastadasp_plan_json(rt, &shape, &json), FASTADASP_ERROR_LIMITS);
    EXPECT_EQ(json, nullptr);
    EXPECT_TRUE(lastErrorHas("6 rows, but this export serves at most 5")) << fastadasp_last_error();

    fastadasp_request request{};
    fastadasp_generation_config config;
    fastadasp_generation_config_init(&config);
    fastadasp_result* result = nullptr;
    EXPECT_EQ(fastadasp_generate(rt, &request, &config, &result), FASTADASP_ERROR_UNAVAILABLE);
    EXPECT_EQ(result, nullptr);
    EXPECT_TRUE(lastErrorHas("opened for planning only")) << fastadasp_last_error();
    fastadasp_destroy(rt);
}

TEST(CApi, ChoosesAnEntryForAnAssumedGpu)
{
    TempDir dir;
    auto data = exampleManifest();
    nlohmann::json file = {{"file", "decode.90.engine"}, {"sha256", "00"}, {"bytes", 1}, {"cache_key", "k"},
        {"build_seconds", nullptr}, {"profile", nlohmann::json::object()}};
    data["engines"]["tensorrt-10.14.1.48/9.0"] = {{"flavor", "tensorrt"}, {"toolkit_version", "10.14.1.48"},
        {"compute_capability", "9.0"}, {"precision", "fp32"}, {"plugin_libraries", nlohmann::json::array()},
        {"graphs", {{"prefill", file}, {"decode", file}}}};
    dir.writeManifest(data);
    fastadasp_runtime* rt = openRuntime(dir.path(), FASTADASP_EXECUTOR_NONE, "sm_90", "10.14.1");
    ASSERT_NE(rt, nullptr);
    EXPECT_STREQ(fastadasp_engine_key(rt), "tensorrt-10.14.1.48/9.0");
    fastadasp_destroy(rt);
    rt = openRuntime(dir.path(), FASTADASP_EXECUTOR_NONE, "8.6", "10.14.1");
    ASSERT_NE(rt, nullptr);
    EXPECT_STREQ(fastadasp_engine_key(rt), "");
    fastadasp_request_shape shape{1, 1, 4, 100, 4, 8};
    char* json = nullptr;
    ASSERT_EQ(fastadasp_plan_json(rt, &shape, &json), FASTADASP_OK);
    auto report = nlohmann::json::parse(json);
    fastadasp_free_string(json);
    std::string reason = report["engine"]["reason"];
    EXPECT_NE(reason.find("built for compute capability 9.0, this GPU is 8.6"), std::string::npos) << reason;
    EXPECT_NE(report["engine"]["build_command"].get<std::string>().find("--compute-capability 8.6"), std::string::npos);
    fastadasp_destroy(rt);
}

TEST(CApi, GeneratesWithTheFakeExecutor)
{
    fastadasp_runtime* rt = openRuntime(exampleExport(), FASTADASP_EXECUTOR_FAKE);
    ASSERT_NE(rt, nullptr);
    std::vector<int64_t> prefix{1, 2, 3, 4, 5, 6}, suffix{7, 8};
    std::vector<float> audio(2 * 40 * 72, 0.25f);
    fastadasp_request request{2, 3, 40, 1, prefix.data(), audio.data(), suffix.data(), nullptr};
    fastadasp_generation_config config;
    fastadasp_generation_config_init(&config);
    config.max_new_tokens = 5;
    config.num_beams = 2;
    fastadasp_result* result = nullptr;
    ASSERT_EQ(fastadasp_generate(rt, &request, &config, &result), FASTADASP_OK) << fastadasp_last_error();
    EXPECT_EQ(fastadasp_result_rows(result), 2);
    EXPECT_EQ(fastadasp_result_length(result), 5);
    ASSERT_NE(fastadasp_result_scores(result), nullptr);
    EXPECT_LT(fastadasp_result_scores(result)[0], 0.0f);
    EXPECT_EQ(fastadasp_result_decode_steps(result), 4);
    std::vector<int64_t> beam(fastadasp_result_tokens(result), fastadasp_result_tokens(result) + 10);
    fastadasp_result_free(result);

    config.num_beams = 1;
    ASSERT_EQ(fastadasp_generate(rt, &request, &config, &result), FASTADASP_OK) << fastadasp_last_error();
    EXPECT_EQ(fastadasp_result_scores(result), nullptr);
    for (int i = 0; i < 10; ++i)
    {
        EXPECT_GE(fastadasp_result_tokens(result)[i], 0);
        EXPECT_LT(fastadasp_result_tokens(result)[i], 256);
    }
    fastadasp_result_free(result);

    config.num_beams = 3; // 2 x 3 rows > max_batch 5
    EXPECT_EQ(fastadasp_generate(rt, &request, &config, &result), FASTADASP_ERROR_LIMITS);
    request.lora_scale = audio.data(); // tiny-llama takes no lora_scale
    config.num_beams = 1;
    EXPECT_EQ(fastadasp_generate(rt, &request, &config, &result), FASTADASP_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(lastErrorHas("takes no lora_scale")) << fastadasp_last_error();
    fastadasp_destroy(rt);
}

TEST(CApi, ReportsErrorsAsStatusAndMessage)
{
    fastadasp_runtime* rt = reinterpret_cast<fastadasp_runtime*>(0x1);
    fastadasp_options options;
    fastadasp_options_init(&options);
    EXPECT_EQ(fastadasp_create(&options, &rt), FASTADASP_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(rt, nullptr);
    EXPECT_TRUE(lastErrorHas("export_dir is required"));
    EXPECT_EQ(fastadasp_create(nullptr, &rt), FASTADASP_ERROR_INVALID_ARGUMENT);

    options.export_dir = "/nonexistent/export";
    options.executor = FASTADASP_EXECUTOR_NONE;
    EXPECT_EQ(fastadasp_create(&options, &rt), FASTADASP_ERROR_MANIFEST);
    EXPECT_TRUE(lastErrorHas("/nonexistent/export is not a directory")) << fastadasp_last_error();

    TempDir dir;
    auto data = exampleManifest();
    data["version"] = 1;
    dir.writeManifest(data);
    options.export_dir = dir.path().c_str();
    EXPECT_EQ(fastadasp_create(&options, &rt), FASTADASP_ERROR_MANIFEST);
    EXPECT_TRUE(lastErrorHas("it is read by fastadasp 0.1.x")) << fastadasp_last_error();

    std::string example = exampleExport();
    options.export_dir = example.c_str();
    options.assume_compute_capability = "portable";
    EXPECT_EQ(fastadasp_create(&options, &rt), FASTADASP_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(lastErrorHas("is not like '8.6'")) << fastadasp_last_error();

    fastadasp_request_shape shape{1, 1, 1, 1, 1, 1};
    char* json = nullptr;
    EXPECT_EQ(fastadasp_plan_json(nullptr, &shape, &json), FASTADASP_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(fastadasp_result_rows(nullptr), 0);
    fastadasp_result_free(nullptr);
    fastadasp_destroy(nullptr);
}

TEST(CApi, SaysWhenTensorRTIsMissing)
{
    if (fastadasp_runtime_has_tensorrt())
    {
        GTEST_SKIP() << "this build has the TensorRT executor";
    }
    fastadasp_options options;
    fastadasp_options_init(&options);
    std::string dir = exampleExport();
    options.export_dir = dir.c_str();
    fastadasp_runtime* rt = nullptr;
    EXPECT_EQ(fastadasp_create(&options, &rt), FASTADASP_ERROR_UNAVAILABLE);
    EXPECT_TRUE(lastErrorHas("built without TensorRT")) << fastadasp_last_error();
    EXPECT_STREQ(fastadasp_runtime_version(), "0.2.0");
}
