// The TensorRT 10 executor: the only translation unit that calls TensorRT.
//
// One IRuntime, the prefill and decode engines of the chosen manifest entry, one execution context each, one CUDA
// stream. Per request: every layer gets its own device KV buffer [rows, Hkv, C_i, d] (C_i from the KV plan);
// prefill writes present.{i} into a workspace and a strided copy places it at the start of each layer's buffer;
// every decode step sets the input shapes, binds every I/O tensor by address and enqueues on the stream, with
// present.{i} bound to the past.{i} address so the ScatterElements write lands in place (or, with kvInPlace off,
// into the second KV set, swapped each step). Beam reorder gathers rows between the two KV sets on the device
// (kv_reorder.cu). Only logits come back to the host.
//
// Written against the TensorRT 10 C++ API (NvInferRuntime.h). TensorRT-RTX's IPluginRegistry / IRuntime vtables
// differ from TensorRT 10's, so a runtime for TensorRT-RTX engines needs TensorRT-RTX's own SDK headers.
#include "trt_executor.h"

#include "../bindings.h"
#include "../errors.h"
#include "../half.h"
#include "kv_reorder.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>

namespace fastadasp
{
namespace
{

void checkCuda(cudaError_t status, std::string const& what)
{
    if (status != cudaSuccess)
    {
        throw Error(Status::kBackend, what + " failed: " + cudaGetErrorString(status));
    }
}

class Logger final : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity > Severity::kWARNING)
        {
            return;
        }
        std::lock_guard<std::mutex> lock(mMutex);
        if (severity <= Severity::kERROR)
        {
            mLastError = message;
        }
        std::fprintf(stderr, "[fastadasp_runtime] TensorRT: %s\n", message);
    }

    std::string lastError()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mLastError.empty() ? std::string("no message from TensorRT") : mLastError;
    }

private:
    std::mutex mMutex;
    std::string mLastError;
};

// Device memory that only grows: buffers keep their high-water size across requests, so a steady stream of
// requests allocates nothing after the first few.
class DeviceBuffer
{
public:
    DeviceBuffer() = default;
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept
        : mData(other.mData)
        , mBytes(other.mBytes)
    {
        other.mData = nullptr;
        other.mBytes = 0;
    }
    ~DeviceBuffer()
    {
        if (mData)
        {
            cudaFree(mData);
        }
    }

    void* reserve(std::size_t bytes, char const* what)
    {
        bytes = std::max<std::size_t>(bytes, 1);
        if (bytes > mBytes)
        {
            if (mData)
            {
                cudaFree(mData);
                mData = nullptr;
                mBytes = 0;
            }
            checkCuda(cudaMalloc(&mData, bytes), std::string("cudaMalloc of ") + std::to_string(bytes) + " bytes for " + what);
            mBytes = bytes;
        }
        return mData;
    }
    void* data() const
    {
        return mData;
    }

private:
    void* mData = nullptr;
    std::size_t mBytes = 0;
};

// Pinned host memory for the transfers on the stream (logits, ids, reorder tables).
class HostBuffer
{
public:
    HostBuffer() = default;
    HostBuffer(HostBuffer const&) = delete;
    HostBuffer& operator=(HostBuffer const&) = delete;
    ~HostBuffer()
    {
        if (mData)
        {
            cudaFreeHost(mData);
        }
    }
    void* reserve(std::size_t bytes)
    {
        bytes = std::max<std::size_t>(bytes, 1);
        if (bytes > mBytes)
        {
            if (mData)
            {
                cudaFreeHost(mData);
                mData = nullptr;
                mBytes = 0;
            }
            checkCuda(cudaMallocHost(&mData, bytes), "cudaMallocHost");
            mBytes = bytes;
        }
        return mData;
    }

private:
    void* mData = nullptr;
    std::size_t mBytes = 0;
};

int64_t elementBytes(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kINT8:
    case nvinfer1::DataType::kUINT8:
    case nvinfer1::DataType::kBOOL:
    case nvinfer1::DataType::kFP8: return 1;
    default: return 0;
    }
}

std::string dimsText(nvinfer1::Dims const& d)
{
    std::ostringstream out;
    out << "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        out << (i ? ", " : "") << d.d[i];
    }
    out << "]";
    return out.str();
}

nvinfer1::Dims makeDims(std::initializer_list<int64_t> values)
{
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

int64_t volume(nvinfer1::Dims const& d)
{
    int64_t n = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        if (d.d[i] < 0)
        {
            return -1;
        }
        n *= d.d[i];
    }
    return n;
}

// float32 host values into the engine tensor's type (fp32 / fp16 / bf16), appended to `out` as raw bytes.
void convertFloats(float const* values, int64_t count, nvinfer1::DataType type, std::vector<unsigned char>& out)
{
    int64_t bytes = elementBytes(type);
    out.resize(static_cast<std::size_t>(count * bytes));
    if (type == nvinfer1::DataType::kFLOAT)
    {
        std::memcpy(out.data(), values, out.size());
        return;
    }
    auto* half = reinterpret_cast<uint16_t*>(out.data());
    for (int64_t i = 0; i < count; ++i)
    {
        half[i] = type == nvinfer1::DataType::kHALF ? floatToHalf(values[i]) : floatToBfloat16(values[i]);
    }
}

struct EngineContext
{
    std::string role;
    std::string path;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    std::vector<std::string> outputs; // every output tensor, in engine order
    std::map<std::string, DeviceBuffer> scratch; // outputs this runtime does not use (debug outputs)

    bool has(std::string const& name) const
    {
        return engine->getTensorIOMode(name.c_str()) != nvinfer1::TensorIOMode::kNONE;
    }
    nvinfer1::DataType type(std::string const& name) const
    {
        return engine->getTensorDataType(name.c_str());
    }
    void setShape(std::string const& name, nvinfer1::Dims const& dims)
    {
        if (!context->setInputShape(name.c_str(), dims))
        {
            throw Error(Status::kLimits,
                "the " + role + " engine rejected shape " + dimsText(dims) + " for " + name
                    + " (outside its optimization profile?)");
        }
    }
    void bind(std::string const& name, void* address)
    {
        if (!context->setTensorAddress(name.c_str(), address))
        {
            throw Error(Status::kBackend, "the " + role + " engine could not bind " + name);
        }
    }
    // An input TensorRT reads on the host to compute shapes (a shape tensor) takes host memory; every other input
    // takes device memory. The graphs use cache_lengths only as data, but the builder decides.
    void bindInput(std::string const& name, void* device, void const* host)
    {
        bool onHost = engine->isShapeInferenceIO(name.c_str());
        bool bound = onHost ? context->setInputTensorAddress(name.c_str(), host)
                            : context->setTensorAddress(name.c_str(), device);
        if (!bound)
        {
            throw Error(Status::kBackend, "the " + role + " engine could not bind " + name);
        }
    }
    nvinfer1::Dims shape(std::string const& name) const
    {
        return context->getTensorShape(name.c_str());
    }
};

class TensorRTExecutor final : public Executor
{
public:
    TensorRTExecutor(Manifest const& manifest, EngineEntry const& entry, TensorRTOptions const& options);
    ~TensorRTExecutor() override;

    char const* name() const noexcept override
    {
        return "tensorrt";
    }
    void prefill(PrefillBatch const& batch, KvPlan const& plan, std::vector<float>& logits) override;
    void decode(std::vector<int64_t> const& inputIds, std::vector<int64_t> const& positionIds,
        std::vector<int64_t> const& cacheLengths, std::vector<float>& logits) override;
    void reorder(std::vector<int32_t> const& index) override;
    void release() noexcept override;

private:
    struct LayerKv
    {
        DeviceBuffer key[2];
        DeviceBuffer value[2];
        int64_t capacity = 0;
        int64_t valid = 0; // entries written so far (T_i after prefill, +1 per decode)
    };

    EngineContext load(std::string const& role, std::string const& path);
    void upload(DeviceBuffer& buffer, void const* data, std::size_t bytes, char const* what);
    void bindUnusedOutputs(EngineContext& engine);
    void enqueue(EngineContext& engine);
    void readLogits(EngineContext& engine, int64_t rows, std::vector<float>& logits);
    int64_t rowBytes(LayerKv const& kv) const
    {
        return mKvHeads * kv.capacity * mHeadDim * mKvElementBytes;
    }

    // Declared first so it outlives the runtime and engines that hold a reference to it.
    Logger mLogger;
    TensorRTOptions mOptions;
    int64_t mLayers = 0;
    int64_t mKvHeads = 0;
    int64_t mHeadDim = 0;
    int64_t mHidden = 0;
    int64_t mVocab = 0;
    int64_t mKvElementBytes = 0;
    bool mLora = false;

    std::vector<void*> mPluginHandles;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    EngineContext mPrefill;
    EngineContext mDecode;
    cudaStream_t mStream = nullptr;

    // per request
    std::vector<LayerKv> mKv;
    int mCurrent = 0;      // which KV set holds the cache
    bool mTwoSets = false; // a second KV set exists (beams, or decode not in place)
    int64_t mRows = 0;     // rows currently held
    int64_t mPlanRows = 0; // rows the buffers were sized for
    std::vector<float> mLoraRows; // [rows, D] on the host: reordered with the beams, uploaded per step

    DeviceBuffer mPrefixIds, mAudio, mSuffixIds, mLoraScale, mLogits, mWorkspace;
    DeviceBuffer mInputIds, mPositionIds, mCacheLengths, mReorderIndex, mReorderJobs;
    HostBuffer mHostLogits, mHostStaging;
    std::vector<unsigned char> mConverted;
};

TensorRTExecutor::TensorRTExecutor(Manifest const& manifest, EngineEntry const& entry, TensorRTOptions const& options)
    : mOptions(options)
{
    ModelArgs const& a = manifest.model.args;
    mLayers = a.numLayers;
    mKvHeads = a.numKvHeads;
    mHeadDim = a.headDim;
    mHidden = a.hiddenSize;
    mVocab = a.vocabSize;
    mLora = manifest.model.promptLora;
    checkCuda(cudaSetDevice(options.device), "cudaSetDevice(" + std::to_string(options.device) + ")");

    // The plugin library registers WeightedMerge's creator; it must be in the registry before deserialising.
    for (auto const& path : options.pluginLibraries)
    {
        void* handle = getPluginRegistry()->loadLibrary(path.c_str());
        if (!handle)
        {
            throw Error(Status::kBackend,
                "TensorRT could not load the plugin library " + path + ": " + mLogger.lastError());
        }
        mPluginHandles.push_back(handle);
    }
    mRuntime.reset(nvinfer1::createInferRuntime(mLogger));
    if (!mRuntime)
    {
        throw Error(Status::kBackend, "nvinfer1::createInferRuntime failed: " + mLogger.lastError());
    }
    mPrefill = load("prefill", manifest.directory + "/" + entry.graphs.at("prefill").file);
    mDecode = load("decode", manifest.directory + "/" + entry.graphs.at("decode").file);

    mKvElementBytes = elementBytes(mDecode.type(bindings::pastKey(0)));
    for (auto const& name : bindings::decodeInputs(mLayers, mLora))
    {
        if (!mDecode.has(name))
        {
            throw Error(Status::kManifest, "the decode engine " + mDecode.path + " has no input " + name + "; rebuild it");
        }
    }
    for (auto const& name : bindings::prefillInputs(mLayers, mLora))
    {
        if (!mPrefill.has(name))
        {
            throw Error(Status::kManifest, "the prefill engine " + mPrefill.path + " has no input " + name + "; rebuild it");
        }
    }
    for (auto const& name : bindings::prefillOutputs(mLayers))
    {
        if (!mPrefill.has(name) || !mDecode.has(name))
        {
            throw Error(Status::kManifest, "the prefill or decode engine lacks output " + name + "; rebuild the engines");
        }
    }
    // Every engine input must be one this runtime feeds: an unknown one would stay unbound.
    for (EngineContext const* e : {&mPrefill, &mDecode})
    {
        std::vector<std::string> known
            = e == &mPrefill ? bindings::prefillInputs(mLayers, mLora) : bindings::decodeInputs(mLayers, mLora);
        for (int32_t i = 0; i < e->engine->getNbIOTensors(); ++i)
        {
            std::string name = e->engine->getIOTensorName(i);
            if (e->engine->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kINPUT
                && std::find(known.begin(), known.end(), name) == known.end())
            {
                throw Error(Status::kManifest,
                    "the " + e->role + " engine " + e->path + " has an input '" + name
                        + "' this runtime does not know; it was built from another export");
            }
        }
    }
    checkCuda(cudaStreamCreateWithFlags(&mStream, cudaStreamNonBlocking), "cudaStreamCreate");
}

TensorRTExecutor::~TensorRTExecutor()
{
    if (mStream)
    {
        cudaStreamSynchronize(mStream);
        cudaStreamDestroy(mStream);
    }
    mKv.clear();
    mPrefill.context.reset();
    mPrefill.engine.reset();
    mDecode.context.reset();
    mDecode.engine.reset();
    mRuntime.reset();
    for (void* handle : mPluginHandles)
    {
        getPluginRegistry()->deregisterLibrary(handle);
    }
}

EngineContext TensorRTExecutor::load(std::string const& role, std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw Error(Status::kManifest, "cannot read the " + role + " engine " + path);
    }
    std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EngineContext e;
    e.role = role;
    e.path = path;
    e.engine.reset(mRuntime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!e.engine)
    {
        throw Error(Status::kBackend,
            "TensorRT could not deserialise the " + role + " engine " + path + " (" + mLogger.lastError()
                + "); it was built for another TensorRT version or GPU, or its plugin library did not load");
    }
    e.context.reset(e.engine->createExecutionContext());
    if (!e.context)
    {
        throw Error(Status::kBackend, "no execution context for the " + role + " engine: " + mLogger.lastError());
    }
    for (int32_t i = 0; i < e.engine->getNbIOTensors(); ++i)
    {
        char const* tensor = e.engine->getIOTensorName(i);
        if (e.engine->getTensorIOMode(tensor) == nvinfer1::TensorIOMode::kOUTPUT)
        {
            e.outputs.emplace_back(tensor);
        }
    }
    return e;
}

void TensorRTExecutor::upload(DeviceBuffer& buffer, void const* data, std::size_t bytes, char const* what)
{
    void* device = buffer.reserve(bytes, what);
    if (bytes > 0)
    {
        checkCuda(cudaMemcpyAsync(device, data, bytes, cudaMemcpyHostToDevice, mStream),
            std::string("copy of ") + what + " to the device");
    }
}

// Outputs other than logits and present.{i} (an export with debug outputs): shape from the context, scratch memory.
void TensorRTExecutor::bindUnusedOutputs(EngineContext& engine)
{
    for (auto const& name : engine.outputs)
    {
        if (name == bindings::kLogits || name.rfind("present.", 0) == 0)
        {
            continue;
        }
        int64_t count = volume(engine.shape(name));
        if (count < 0)
        {
            throw Error(Status::kBackend, "the " + engine.role + " engine cannot size output " + name);
        }
        engine.bind(name, engine.scratch[name].reserve(static_cast<std::size_t>(count * elementBytes(engine.type(name))), "an extra output"));
    }
}

void TensorRTExecutor::enqueue(EngineContext& engine)
{
    if (!engine.context->allInputDimensionsSpecified())
    {
        throw Error(Status::kInternal, "the " + engine.role + " engine has an input without a shape");
    }
    if (!engine.context->enqueueV3(mStream))
    {
        throw Error(Status::kBackend, "enqueueV3 of the " + engine.role + " engine failed: " + mLogger.lastError());
    }
}

void TensorRTExecutor::readLogits(EngineContext& engine, int64_t rows, std::vector<float>& logits)
{
    nvinfer1::DataType type = engine.type(bindings::kLogits);
    std::size_t bytes = static_cast<std::size_t>(rows * mVocab * elementBytes(type));
    void* host = mHostLogits.reserve(bytes);
    checkCuda(cudaMemcpyAsync(host, mLogits.data(), bytes, cudaMemcpyDeviceToHost, mStream), "copy of the logits to the host");
    checkCuda(cudaStreamSynchronize(mStream), "the " + engine.role + " step");
    logits.resize(static_cast<std::size_t>(rows * mVocab));
    if (type == nvinfer1::DataType::kFLOAT)
    {
        std::memcpy(logits.data(), host, bytes);
        return;
    }
    auto const* half = static_cast<uint16_t const*>(host);
    for (std::size_t i = 0; i < logits.size(); ++i)
    {
        logits[i] = type == nvinfer1::DataType::kHALF ? halfToFloat(half[i]) : bfloat16ToFloat(half[i]);
    }
}

void TensorRTExecutor::prefill(PrefillBatch const& batch, KvPlan const& plan, std::vector<float>& logits)
{
    checkCuda(cudaSetDevice(mOptions.device), "cudaSetDevice");
    int64_t const B = batch.batch;
    int64_t const P = batch.prefixTokens;
    int64_t const N = batch.audioTokens;
    int64_t const S = batch.suffixTokens;

    // Inputs.
    upload(mPrefixIds, batch.prefixIds, static_cast<std::size_t>(B * P * 8), "prefix_ids");
    upload(mSuffixIds, batch.suffixIds, static_cast<std::size_t>(B * S * 8), "suffix_ids");
    convertFloats(batch.audioEmbeds, B * N * mHidden, mPrefill.type(bindings::kAudioEmbeds), mConverted);
    upload(mAudio, mConverted.data(), mConverted.size(), "audio_embeds");
    mPrefill.setShape(bindings::kPrefixIds, makeDims({B, P}));
    mPrefill.setShape(bindings::kAudioEmbeds, makeDims({B, N, mHidden}));
    mPrefill.setShape(bindings::kSuffixIds, makeDims({B, S}));
    mPrefill.bindInput(bindings::kPrefixIds, mPrefixIds.data(), batch.prefixIds);
    mPrefill.bind(bindings::kAudioEmbeds, mAudio.data());
    mPrefill.bindInput(bindings::kSuffixIds, mSuffixIds.data(), batch.suffixIds);
    if (mLora)
    {
        mLoraRows.assign(batch.loraScale, batch.loraScale + B * mHidden);
        convertFloats(batch.loraScale, B * mHidden, mPrefill.type(bindings::kLoraScale), mConverted);
        upload(mLoraScale, mConverted.data(), mConverted.size(), "lora_scale");
        mPrefill.setShape(bindings::kLoraScale, makeDims({B, mHidden}));
        mPrefill.bind(bindings::kLoraScale, mLoraScale.data());
    }

    // Outputs: present.{i} [B, Hkv, T_i, d] into one workspace; the shapes must follow the length rule.
    std::vector<int64_t> offsets;
    int64_t workspace = 0;
    for (auto const& layer : plan.layers)
    {
        nvinfer1::Dims want = makeDims({B, mKvHeads, layer.prefillLength, mHeadDim});
        for (auto const& name : {bindings::presentKey(layer.layer), bindings::presentValue(layer.layer)})
        {
            nvinfer1::Dims got = mPrefill.shape(name);
            if (volume(got) != volume(want) || got.nbDims != 4 || got.d[2] != layer.prefillLength)
            {
                throw Error(Status::kManifest,
                    "the prefill engine makes " + name + " " + dimsText(got) + ", the manifest's length rule says "
                        + dimsText(want) + "; the engine and manifest.json come from different exports");
            }
            offsets.push_back(workspace);
            workspace += volume(want) * mKvElementBytes;
        }
    }
    auto* base = static_cast<char*>(mWorkspace.reserve(static_cast<std::size_t>(workspace), "the prefill KV workspace"));
    for (std::size_t i = 0; i < plan.layers.size(); ++i)
    {
        mPrefill.bind(bindings::presentKey(static_cast<int64_t>(i)), base + offsets[2 * i]);
        mPrefill.bind(bindings::presentValue(static_cast<int64_t>(i)), base + offsets[2 * i + 1]);
    }
    nvinfer1::DataType logitsType = mPrefill.type(bindings::kLogits);
    mLogits.reserve(static_cast<std::size_t>(plan.rows * mVocab * elementBytes(logitsType)), "logits");
    mPrefill.bind(bindings::kLogits, mLogits.data());
    bindUnusedOutputs(mPrefill);
    enqueue(mPrefill);

    // Per-layer KV buffers sized for this request's capacities, then the prefill entries at their start.
    mTwoSets = needsSecondKvSet(plan.request.numBeams, mOptions.kvInPlace);
    mKv.resize(plan.layers.size());
    mCurrent = 0;
    for (std::size_t i = 0; i < plan.layers.size(); ++i)
    {
        LayerKv& kv = mKv[i];
        kv.capacity = plan.layers[i].capacity;
        kv.valid = plan.layers[i].prefillLength;
        std::size_t bytes = static_cast<std::size_t>(plan.rows * rowBytes(kv));
        for (int set = 0; set < (mTwoSets ? 2 : 1); ++set)
        {
            kv.key[set].reserve(bytes, "a KV cache layer");
            kv.value[set].reserve(bytes, "a KV cache layer");
        }
        std::size_t width = static_cast<std::size_t>(kv.valid * mHeadDim * mKvElementBytes);
        std::size_t pitch = static_cast<std::size_t>(kv.capacity * mHeadDim * mKvElementBytes);
        for (int part = 0; part < 2; ++part)
        {
            void* dst = part == 0 ? kv.key[0].data() : kv.value[0].data();
            checkCuda(cudaMemcpy2DAsync(dst, pitch, base + offsets[2 * i + part], width, width,
                          static_cast<std::size_t>(B * mKvHeads), cudaMemcpyDeviceToDevice, mStream),
                "placing layer " + std::to_string(i) + "'s prefill KV");
        }
    }
    mRows = B;
    mPlanRows = plan.rows;
    readLogits(mPrefill, B, logits);
}

void TensorRTExecutor::decode(std::vector<int64_t> const& inputIds, std::vector<int64_t> const& positionIds,
    std::vector<int64_t> const& cacheLengths, std::vector<float>& logits)
{
    int64_t const rows = static_cast<int64_t>(inputIds.size());
    if (rows != mRows || static_cast<int64_t>(cacheLengths.size()) != mLayers)
    {
        throw Error(Status::kInternal, "decode called with " + std::to_string(rows) + " rows for " + std::to_string(mRows));
    }
    upload(mInputIds, inputIds.data(), inputIds.size() * 8, "input_ids");
    upload(mPositionIds, positionIds.data(), positionIds.size() * 8, "position_ids");
    upload(mCacheLengths, cacheLengths.data(), cacheLengths.size() * 8, "cache_lengths");
    mDecode.setShape(bindings::kInputIds, makeDims({rows, 1}));
    mDecode.setShape(bindings::kPositionIds, makeDims({rows, 1}));
    mDecode.setShape(bindings::kCacheLengths, makeDims({mLayers}));
    mDecode.bindInput(bindings::kInputIds, mInputIds.data(), inputIds.data());
    mDecode.bindInput(bindings::kPositionIds, mPositionIds.data(), positionIds.data());
    mDecode.bindInput(bindings::kCacheLengths, mCacheLengths.data(), cacheLengths.data());
    if (mLora)
    {
        convertFloats(mLoraRows.data(), rows * mHidden, mDecode.type(bindings::kLoraScale), mConverted);
        upload(mLoraScale, mConverted.data(), mConverted.size(), "lora_scale");
        mDecode.setShape(bindings::kLoraScale, makeDims({rows, mHidden}));
        mDecode.bind(bindings::kLoraScale, mLoraScale.data());
    }
    int const next = mOptions.kvInPlace ? mCurrent : 1 - mCurrent;
    for (int64_t i = 0; i < mLayers; ++i)
    {
        LayerKv& kv = mKv[static_cast<std::size_t>(i)];
        if (cacheLengths[i] != kv.valid || kv.valid >= kv.capacity)
        {
            throw Error(Status::kInternal,
                "layer " + std::to_string(i) + ": decode writes at " + std::to_string(cacheLengths[i]) + " but "
                    + std::to_string(kv.valid) + " of " + std::to_string(kv.capacity) + " entries are held");
        }
        nvinfer1::Dims shape = makeDims({rows, mKvHeads, kv.capacity, mHeadDim});
        mDecode.setShape(bindings::pastKey(i), shape);
        mDecode.setShape(bindings::pastValue(i), shape);
        mDecode.bind(bindings::pastKey(i), kv.key[mCurrent].data());
        mDecode.bind(bindings::pastValue(i), kv.value[mCurrent].data());
        // The same address as past: the step's ScatterElements writes entry cache_lengths[i] in place.
        mDecode.bind(bindings::presentKey(i), kv.key[next].data());
        mDecode.bind(bindings::presentValue(i), kv.value[next].data());
    }
    mDecode.bind(bindings::kLogits, mLogits.reserve(static_cast<std::size_t>(rows * mVocab * elementBytes(mDecode.type(bindings::kLogits))), "logits"));
    bindUnusedOutputs(mDecode);
    enqueue(mDecode);
    mCurrent = next;
    for (auto& kv : mKv)
    {
        ++kv.valid;
    }
    readLogits(mDecode, rows, logits);
}

void TensorRTExecutor::reorder(std::vector<int32_t> const& index)
{
    int64_t const rows = static_cast<int64_t>(index.size());
    if (!mTwoSets || rows > mPlanRows)
    {
        throw Error(Status::kInternal,
            "beam reorder to " + std::to_string(rows) + " rows needs the second KV set sized for them");
    }
    for (int32_t i : index)
    {
        if (i < 0 || i >= mRows)
        {
            throw Error(Status::kInternal, "beam reorder index " + std::to_string(i) + " outside " + std::to_string(mRows) + " rows");
        }
    }
    std::vector<KvGatherJob> jobs;
    for (auto& kv : mKv)
    {
        int64_t headPitch = kv.capacity * mHeadDim * mKvElementBytes;
        int64_t valid = kv.valid * mHeadDim * mKvElementBytes;
        jobs.push_back({static_cast<char const*>(kv.key[mCurrent].data()), static_cast<char*>(kv.key[1 - mCurrent].data()),
            rowBytes(kv), headPitch, valid});
        jobs.push_back({static_cast<char const*>(kv.value[mCurrent].data()),
            static_cast<char*>(kv.value[1 - mCurrent].data()), rowBytes(kv), headPitch, valid});
    }
    // Both tables go through one pinned staging buffer; the stream is synchronised at the end of every step, so it
    // is never overwritten while a copy from it is pending.
    std::size_t jobBytes = jobs.size() * sizeof(KvGatherJob);
    std::size_t indexBytes = index.size() * sizeof(int32_t);
    auto* staging = static_cast<unsigned char*>(mHostStaging.reserve(jobBytes + indexBytes));
    std::memcpy(staging, jobs.data(), jobBytes);
    std::memcpy(staging + jobBytes, index.data(), indexBytes);
    upload(mReorderJobs, staging, jobBytes, "the beam reorder table");
    upload(mReorderIndex, staging + jobBytes, indexBytes, "the beam reorder index");
    checkCuda(launchKvGather(static_cast<KvGatherJob const*>(mReorderJobs.data()), static_cast<int32_t>(jobs.size()),
                  static_cast<int32_t const*>(mReorderIndex.data()), static_cast<int32_t>(rows), static_cast<int32_t>(mKvHeads),
                  mStream),
        "the beam reorder kernel");
    checkCuda(cudaStreamSynchronize(mStream), "the beam reorder");
    mCurrent = 1 - mCurrent;
    mRows = rows;
    if (mLora)
    {
        std::vector<float> next(static_cast<std::size_t>(rows * mHidden));
        for (int64_t r = 0; r < rows; ++r)
        {
            std::copy_n(mLoraRows.data() + index[r] * mHidden, mHidden, next.data() + r * mHidden);
        }
        mLoraRows.swap(next);
    }
}

void TensorRTExecutor::release() noexcept
{
    // Buffers stay allocated for the next request; only the request's bookkeeping is dropped.
    mRows = 0;
    mLoraRows.clear();
}

} // namespace

Platform detectTensorRTPlatform(int device)
{
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0)
    {
        throw Error(Status::kUnavailable,
            std::string("no CUDA device is visible (cudaGetDeviceCount: ")
                + (status == cudaSuccess ? "0 devices" : cudaGetErrorString(status))
                + "); the TensorRT executor needs an NVIDIA GPU and driver; fastadasp-run --dry-run plans without one");
    }
    if (device < 0 || device >= count)
    {
        throw Error(Status::kInvalidArgument,
            "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " visible)");
    }
    cudaDeviceProp prop{};
    checkCuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    int32_t version = getInferLibVersion(); // major * 10000 + minor * 100 + patch since TensorRT 10
    Platform p;
    p.flavor = "tensorrt";
    p.toolkitVersion = std::to_string(version / 10000) + "." + std::to_string((version / 100) % 100) + "."
        + std::to_string(version % 100);
    p.computeCapability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    p.device = prop.name;
    p.source = "detected";
    return p;
}

std::unique_ptr<Executor> createTensorRTExecutor(
    Manifest const& manifest, EngineEntry const& entry, TensorRTOptions const& options)
{
    return std::make_unique<TensorRTExecutor>(manifest, entry, options);
}

} // namespace fastadasp
