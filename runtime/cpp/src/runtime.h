// The object behind a fastadasp_runtime handle: one export directory, its checked manifest, the engine entry
// chosen for this GPU, and an executor. Requests are planned against the serving limits and engine profiles,
// then generated with the greedy / beam loop of generate.h.
#pragma once

#include "engine_select.h"
#include "executor.h"
#include "generate.h"
#include "kv_plan.h"
#include "manifest.h"

#include <memory>
#include <mutex>
#include <string>

namespace fastadasp
{

enum class ExecutorKind : int
{
    kTensorRT = 0,
    kNone = 1, // planning only
    kFake = 2,
};

struct RuntimeOptions
{
    std::string exportDir;
    ExecutorKind executor = ExecutorKind::kTensorRT;
    std::string engineKey;
    std::string pluginLibrary;
    std::string assumeComputeCapability;
    std::string assumeTensorRTVersion;
    int device = 0;
    bool verifyHashes = true;
    bool kvInPlace = true;
    uint64_t fakeSeed = 0;
};

// True when this library was built with the TensorRT executor.
bool builtWithTensorRT();

class Runtime
{
public:
    static std::unique_ptr<Runtime> open(RuntimeOptions const& options);

    Manifest const& manifest() const
    {
        return mManifest;
    }
    EngineChoice const& engine() const
    {
        return mChoice;
    }
    Platform const& platform() const
    {
        return mPlatform;
    }
    ModelGeometry const& geometry() const
    {
        return mGeometry;
    }

    // checkRequest + planKv (+ the chosen engine's profiles when this handle runs engines).
    KvPlan plan(RequestShape const& shape) const;
    // The dry-run report as JSON text.
    std::string planJson(RequestShape const& shape) const;

    GenerationResult generate(PrefillBatch const& batch, GenerationConfig const& config);

private:
    Runtime() = default;

    RuntimeOptions mOptions;
    Manifest mManifest;
    ModelGeometry mGeometry;
    Platform mPlatform;
    EngineChoice mChoice;
    std::string mPlatformNote; // why the platform is unknown, when it is
    std::unique_ptr<Executor> mExecutor;
    std::mutex mMutex;
};

} // namespace fastadasp
