// The TensorRT executor's factory. This header names no TensorRT or CUDA type, so the rest of the runtime
// includes it whether or not TensorRT was found; the definitions exist only in builds with TensorRT
// (FASTADASP_WITH_TENSORRT, see runtime/cpp/CMakeLists.txt).
#pragma once

#include "../engine_select.h"
#include "../executor.h"
#include "../manifest.h"

#include <memory>
#include <string>
#include <vector>

namespace fastadasp
{

struct TensorRTOptions
{
    int device = 0;
    bool kvInPlace = true;                    // present.{i} bound to the past.{i} address
    std::vector<std::string> pluginLibraries; // loaded (in order) before the engines are deserialised
};

// The local GPU's compute capability and the linked TensorRT's version; Error(kUnavailable) without a device.
Platform detectTensorRTPlatform(int device);

// Loads the plugin libraries, deserialises the entry's prefill and decode engines and creates one execution
// context each. Error(kBackend / kManifest) naming the engine on failure.
std::unique_ptr<Executor> createTensorRTExecutor(Manifest const& manifest, EngineEntry const& entry,
    TensorRTOptions const& options);

} // namespace fastadasp
