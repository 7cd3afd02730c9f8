/*
 * WeightedMerge TensorRT plugin. No exception crosses the C++ ABI: every entry point is noexcept and turns a
 * failure into an error status / nullptr plus a message (TensorRT's logger when one was handed over, and
 * fastadasp_weighted_merge_last_error()).
 *
 * With FASTADASP_PLUGIN_TRACE=<file> in the environment when the library is first used, every plugin and
 * creator method appends one line "<method> [details]" to that file ("-" for stderr): the tests use it to
 * record which methods a real TensorRT builder calls.
 */
#include "weightedMergePlugin.h"

#include "weightedMergeKernel.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>
#include <stdexcept>

using namespace nvinfer1;

namespace fastadasp
{
namespace plugin
{
namespace
{

std::mutex gStateMutex;
std::string gLastError;
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

std::string const& tracePath()
{
    static std::string const path = [] {
        char const* value = std::getenv("FASTADASP_PLUGIN_TRACE");
        return std::string(value != nullptr ? value : "");
    }();
    return path;
}

void trace(char const* method, std::string const& detail = std::string()) noexcept
{
    try
    {
        std::string const& path = tracePath();
        if (path.empty())
        {
            return;
        }
        std::lock_guard<std::mutex> lock(gStateMutex);
        FILE* out = path == "-" ? stderr : std::fopen(path.c_str(), "a");
        if (out == nullptr)
        {
            return;
        }
        std::fprintf(out, "%s%s%s\n", method, detail.empty() ? "" : " ", detail.c_str());
        if (out != stderr)
        {
            std::fclose(out);
        }
        else
        {
            std::fflush(out);
        }
    }
    catch (...)
    {
        // tracing is best effort; a failure must not change the plugin's answer
    }
}

void reportError(char const* method, char const* message) noexcept
{
    try
    {
        std::string const text = std::string(kWEIGHTED_MERGE_NAME) + "::" + method + ": " + message;
        {
            std::lock_guard<std::mutex> lock(gStateMutex);
            gLastError = text;
        }
        ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(ILogger::Severity::kERROR, text.c_str());
        }
        trace("error", text);
    }
    catch (...)
    {
    }
}

// Runs body(); an exception becomes an error report and the fallback value.
template <typename R, typename F>
R guarded(char const* method, R fallback, F&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        reportError(method, e.what());
    }
    catch (...)
    {
        reportError(method, "unknown exception");
    }
    return fallback;
}

void require(bool condition, char const* message)
{
    if (!condition)
    {
        throw std::invalid_argument(message);
    }
}

bool isMergeType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

wm::ElementType elementType(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return wm::ElementType::kFLOAT32;
    case DataType::kHALF: return wm::ElementType::kFLOAT16;
    case DataType::kBF16: return wm::ElementType::kBFLOAT16;
    default: break;
    }
    throw std::invalid_argument("x must be fp32, fp16 or bf16");
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "fp32";
    case DataType::kHALF: return "fp16";
    case DataType::kBF16: return "bf16";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    default: return "other";
    }
}

std::string dimsText(Dims const& d)
{
    std::ostringstream s;
    s << "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s << (i ? "," : "") << d.d[i];
    }
    s << "]";
    return s.str();
}

int32_t parseRatioNumerator(PluginFieldCollection const* fc)
{
    require(fc != nullptr, "no plugin fields");
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr || std::strcmp(f.name, kRATIO_NUMERATOR_FIELD) != 0)
        {
            continue; // plugin_version / plugin_namespace and anything else a parser forwards
        }
        require(f.data != nullptr && f.length >= 1, "ratio_numerator has no value");
        int64_t q = 0;
        if (f.type == PluginFieldType::kINT32)
        {
            q = *static_cast<int32_t const*>(f.data);
        }
        else if (f.type == PluginFieldType::kINT64)
        {
            q = *static_cast<int64_t const*>(f.data);
        }
        else
        {
            throw std::invalid_argument("ratio_numerator must be an integer field (kINT32 or kINT64)");
        }
        require(q >= 0 && q < wm::kRatioDenominator, "ratio_numerator must be in [0, 65535]");
        return static_cast<int32_t>(q);
    }
    throw std::invalid_argument("missing required field ratio_numerator");
}

} // namespace

// ================================================================================================ plugin

WeightedMergePlugin::WeightedMergePlugin(int32_t ratioNumerator)
    : mRatioNumerator(ratioNumerator)
{
    bindFields();
}

WeightedMergePlugin::WeightedMergePlugin(WeightedMergePlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mRatioNumerator(other.mRatioNumerator)
{
    bindFields(); // the copy's fields must point at its own members
}

void WeightedMergePlugin::bindFields()
{
    mMetadata = std::string(kRATIO_NUMERATOR_FIELD) + "=" + std::to_string(mRatioNumerator);
    mFields.clear();
    mFields.emplace_back(kRATIO_NUMERATOR_FIELD, &mRatioNumerator, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginCapability* WeightedMergePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    trace("getCapabilityInterface",
        type == PluginCapabilityType::kBUILD ? "build" : type == PluginCapabilityType::kRUNTIME ? "runtime" : "core");
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    reportError("getCapabilityInterface", "unknown capability type");
    return nullptr;
}

IPluginV3* WeightedMergePlugin::clone() noexcept
{
    trace("clone");
    return guarded<IPluginV3*>("clone", nullptr, [&]() -> IPluginV3* { return new WeightedMergePlugin(*this); });
}

char const* WeightedMergePlugin::getPluginName() const noexcept
{
    return kWEIGHTED_MERGE_NAME;
}

char const* WeightedMergePlugin::getPluginVersion() const noexcept
{
    return kWEIGHTED_MERGE_VERSION;
}

char const* WeightedMergePlugin::getPluginNamespace() const noexcept
{
    return kWEIGHTED_MERGE_NAMESPACE;
}

int32_t WeightedMergePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return guarded<int32_t>("configurePlugin", -1, [&]() -> int32_t {
        require(in != nullptr && out != nullptr, "null tensor descriptions");
        require(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "expects 3 inputs and 2 outputs");
        require(in[kX_TENSOR_IDX].desc.dims.nbDims == 3, "x must be [B, n, D]");
        require(in[kKEYS_TENSOR_IDX].desc.dims.nbDims == 3, "keys must be [B, n, K]");
        require(in[kRECEIVED_TENSOR_IDX].desc.dims.nbDims == 2, "received must be [B, n]");
        trace("configurePlugin",
            std::string("x=") + typeName(in[kX_TENSOR_IDX].desc.type) + dimsText(in[kX_TENSOR_IDX].desc.dims)
                + " max=" + dimsText(in[kX_TENSOR_IDX].max));
        return 0;
    });
}

int32_t WeightedMergePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    trace("getOutputDataTypes");
    return guarded<int32_t>("getOutputDataTypes", -1, [&]() -> int32_t {
        require(outputTypes != nullptr && inputTypes != nullptr, "null type arrays");
        require(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "expects 3 inputs and 2 outputs");
        require(isMergeType(inputTypes[kX_TENSOR_IDX]), "x must be fp32, fp16 or bf16");
        outputTypes[kMERGED_OUTPUT_IDX] = inputTypes[kX_TENSOR_IDX];
        outputTypes[kSOURCE_INDEX_OUTPUT_IDX] = DataType::kINT64;
        return 0;
    });
}

int32_t WeightedMergePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    return guarded<int32_t>("getOutputShapes", -1, [&]() -> int32_t {
        require(inputs != nullptr && outputs != nullptr, "null shape arrays");
        require(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "expects 3 inputs and 2 outputs");
        DimsExprs const& x = inputs[kX_TENSOR_IDX];
        require(x.nbDims == 3, "x must be [B, n, D]");
        require(inputs[kKEYS_TENSOR_IDX].nbDims == 3, "keys must be [B, n, K]");
        require(inputs[kRECEIVED_TENSOR_IDX].nbDims == 2, "received must be [B, n]");
        IDimensionExpr const* batch = x.d[0];
        IDimensionExpr const* n = x.d[1];
        // m = min(n * q // 2^16, max(n - 1, 0)); kept = n - m. Pure shape arithmetic, no data dependence.
        IDimensionExpr const* q = exprBuilder.constant(mRatioNumerator);
        IDimensionExpr const* denominator = exprBuilder.constant(wm::kRatioDenominator);
        IDimensionExpr const* one = exprBuilder.constant(1);
        IDimensionExpr const* zero = exprBuilder.constant(0);
        require(q && denominator && one && zero, "expression builder returned null");
        IDimensionExpr const* scaled = exprBuilder.operation(DimensionOperation::kPROD, *n, *q);
        require(scaled != nullptr, "expression builder returned null");
        IDimensionExpr const* floorM = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *scaled, *denominator);
        IDimensionExpr const* nMinusOne = exprBuilder.operation(DimensionOperation::kSUB, *n, *one);
        require(floorM && nMinusOne, "expression builder returned null");
        IDimensionExpr const* cap = exprBuilder.operation(DimensionOperation::kMAX, *nMinusOne, *zero);
        require(cap != nullptr, "expression builder returned null");
        IDimensionExpr const* m = exprBuilder.operation(DimensionOperation::kMIN, *floorM, *cap);
        require(m != nullptr, "expression builder returned null");
        IDimensionExpr const* kept = exprBuilder.operation(DimensionOperation::kSUB, *n, *m);
        require(kept != nullptr, "expression builder returned null");

        DimsExprs& merged = outputs[kMERGED_OUTPUT_IDX];
        merged.nbDims = 3;
        merged.d[0] = batch;
        merged.d[1] = kept;
        merged.d[2] = x.d[2];
        DimsExprs& source = outputs[kSOURCE_INDEX_OUTPUT_IDX];
        source.nbDims = 2;
        source.d[0] = batch;
        source.d[1] = kept;
        trace("getOutputShapes", n->isConstant() ? "n=" + std::to_string(n->getConstantValue()) : "n=symbolic");
        return 0;
    });
}

bool WeightedMergePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    bool const ok = guarded<bool>("supportsFormatCombination", false, [&]() -> bool {
        if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        PluginTensorDesc const& d = inOut[pos].desc;
        if (d.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        DataType const xType = inOut[kX_TENSOR_IDX].desc.type;
        switch (pos)
        {
        case kX_TENSOR_IDX: return isMergeType(d.type);
        case kKEYS_TENSOR_IDX: return d.type == xType;
        case kRECEIVED_TENSOR_IDX: return d.type == DataType::kFLOAT;
        case kNB_INPUTS + kMERGED_OUTPUT_IDX: return d.type == xType;
        case kNB_INPUTS + kSOURCE_INDEX_OUTPUT_IDX: return d.type == DataType::kINT64;
        default: return false;
        }
    });
    trace("supportsFormatCombination", "pos=" + std::to_string(pos) + " " + (ok ? "yes" : "no"));
    return ok;
}

int32_t WeightedMergePlugin::getNbOutputs() const noexcept
{
    trace("getNbOutputs");
    return kNB_OUTPUTS;
}

size_t WeightedMergePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return guarded<size_t>("getWorkspaceSize", 0, [&]() -> size_t {
        require(inputs != nullptr && nbInputs == kNB_INPUTS, "expects 3 inputs");
        Dims const& maxDims = inputs[kX_TENSOR_IDX].max;
        require(maxDims.nbDims == 3 && maxDims.d[0] >= 0 && maxDims.d[1] >= 0, "x needs known upper bounds");
        size_t const bytes = wm::workspaceBytes(maxDims.d[0], maxDims.d[1]);
        trace("getWorkspaceSize", "max=" + dimsText(maxDims) + " bytes=" + std::to_string(bytes));
        return bytes;
    });
}

int32_t WeightedMergePlugin::getValidTactics(int32_t* /*tactics*/, int32_t /*nbTactics*/) noexcept
{
    trace("getValidTactics");
    return 0;
}

int32_t WeightedMergePlugin::getNbTactics() noexcept
{
    trace("getNbTactics");
    return 0; // one implementation: the default tactic
}

char const* WeightedMergePlugin::getTimingCacheID() noexcept
{
    trace("getTimingCacheID");
    return mMetadata.c_str(); // the only creation state that changes timings
}

int32_t WeightedMergePlugin::getFormatCombinationLimit() noexcept
{
    trace("getFormatCombinationLimit");
    return kDEFAULT_FORMAT_COMBINATION_LIMIT;
}

char const* WeightedMergePlugin::getMetadataString() noexcept
{
    trace("getMetadataString");
    return mMetadata.c_str();
}

int32_t WeightedMergePlugin::setTactic(int32_t tactic) noexcept
{
    trace("setTactic", std::to_string(tactic));
    return tactic == 0 ? 0 : -1;
}

int32_t WeightedMergePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    trace("onShapeChange");
    return guarded<int32_t>("onShapeChange", -1, [&]() -> int32_t {
        require(in != nullptr && out != nullptr, "null tensor descriptions");
        require(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS, "expects 3 inputs and 2 outputs");
        return 0;
    });
}

int32_t WeightedMergePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    trace("enqueue");
    return guarded<int32_t>("enqueue", -1, [&]() -> int32_t {
        require(inputDesc != nullptr && outputDesc != nullptr && inputs != nullptr && outputs != nullptr,
            "null tensors");
        Dims const& x = inputDesc[kX_TENSOR_IDX].dims;
        Dims const& keys = inputDesc[kKEYS_TENSOR_IDX].dims;
        Dims const& received = inputDesc[kRECEIVED_TENSOR_IDX].dims;
        require(x.nbDims == 3 && keys.nbDims == 3 && received.nbDims == 2, "bad input ranks");
        require(keys.d[0] == x.d[0] && keys.d[1] == x.d[1], "keys must be [B, n, K] with x's B and n");
        require(received.d[0] == x.d[0] && received.d[1] == x.d[1], "received must be [B, n]");
        require(inputDesc[kKEYS_TENSOR_IDX].type == inputDesc[kX_TENSOR_IDX].type, "keys must have x's type");
        require(inputDesc[kRECEIVED_TENSOR_IDX].type == DataType::kFLOAT, "received must be fp32");
        wm::MergeProblem problem;
        problem.batch = x.d[0];
        problem.tokens = x.d[1];
        problem.hidden = x.d[2];
        problem.keyDim = keys.d[2];
        problem.ratioNumerator = mRatioNumerator;
        problem.type = elementType(inputDesc[kX_TENSOR_IDX].type);
        size_t const workspaceSize = wm::workspaceBytes(problem.batch, problem.tokens);
        cudaError_t const status = wm::launchWeightedMerge(problem, inputs[kX_TENSOR_IDX], inputs[kKEYS_TENSOR_IDX],
            static_cast<float const*>(inputs[kRECEIVED_TENSOR_IDX]), outputs[kMERGED_OUTPUT_IDX],
            static_cast<int64_t*>(outputs[kSOURCE_INDEX_OUTPUT_IDX]), workspace, workspaceSize, stream);
        if (status != cudaSuccess)
        {
            throw std::runtime_error(std::string("kernel launch failed: ") + cudaGetErrorString(status));
        }
        return 0;
    });
}

IPluginV3* WeightedMergePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    trace("attachToContext");
    return guarded<IPluginV3*>(
        "attachToContext", nullptr, [&]() -> IPluginV3* { return new WeightedMergePlugin(*this); });
}

PluginFieldCollection const* WeightedMergePlugin::getFieldsToSerialize() noexcept
{
    trace("getFieldsToSerialize", mMetadata);
    return &mFieldCollection;
}

// ================================================================================================ creator

WeightedMergePluginCreator::WeightedMergePluginCreator()
{
    mFieldNames.emplace_back(kRATIO_NUMERATOR_FIELD, nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* WeightedMergePluginCreator::getPluginName() const noexcept
{
    return kWEIGHTED_MERGE_NAME;
}

char const* WeightedMergePluginCreator::getPluginVersion() const noexcept
{
    return kWEIGHTED_MERGE_VERSION;
}

char const* WeightedMergePluginCreator::getPluginNamespace() const noexcept
{
    return kWEIGHTED_MERGE_NAMESPACE;
}

PluginFieldCollection const* WeightedMergePluginCreator::getFieldNames() noexcept
{
    trace("getFieldNames");
    return &mFieldCollection;
}

IPluginV3* WeightedMergePluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    return guarded<IPluginV3*>("createPlugin", nullptr, [&]() -> IPluginV3* {
        std::ostringstream detail;
        detail << "phase=" << (phase == TensorRTPhase::kBUILD ? "build" : "runtime") << " fields=";
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            detail << (i ? "," : "") << (f.name ? f.name : "?") << ":" << static_cast<int32_t>(f.type);
        }
        int32_t const q = parseRatioNumerator(fc);
        detail << " ratio_numerator=" << q;
        trace("createPlugin", detail.str());
        return new WeightedMergePlugin(q);
    });
}

} // namespace plugin
} // namespace fastadasp

// ================================================================================================ entry points

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    fastadasp::plugin::trace("getCreators");
    try
    {
        static fastadasp::plugin::WeightedMergePluginCreator creator;
        static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
        nbCreators = 1;
        return creators;
    }
    catch (...)
    {
        nbCreators = 0;
        return nullptr;
    }
}

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    fastadasp::plugin::trace("setLoggerFinder");
    fastadasp::plugin::gLoggerFinder.store(finder);
}

extern "C" char const* fastadasp_weighted_merge_last_error() noexcept
{
    // The returned pointer stays valid until the next error; the harness reads it right after a failing call.
    static thread_local std::string copy;
    try
    {
        std::lock_guard<std::mutex> lock(fastadasp::plugin::gStateMutex);
        copy = fastadasp::plugin::gLastError;
    }
    catch (...)
    {
        return "";
    }
    return copy.c_str();
}

extern "C" int32_t fastadasp_weighted_merge_enqueue(int32_t type, int64_t batch, int64_t tokens, int64_t hidden,
    int64_t keyDim, int32_t ratioNumerator, void const* x, void const* keys, float const* received, void* merged,
    int64_t* sourceIndex, void* workspace, size_t workspaceBytes, void* stream) noexcept
{
    if (type < 0 || type > 2)
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    fastadasp::wm::MergeProblem problem;
    problem.batch = batch;
    problem.tokens = tokens;
    problem.hidden = hidden;
    problem.keyDim = keyDim;
    problem.ratioNumerator = ratioNumerator;
    problem.type = static_cast<fastadasp::wm::ElementType>(type);
    return static_cast<int32_t>(fastadasp::wm::launchWeightedMerge(problem, x, keys, received, merged, sourceIndex,
        workspace, workspaceBytes, static_cast<cudaStream_t>(stream)));
}

extern "C" size_t fastadasp_weighted_merge_workspace_bytes(int64_t batch, int64_t tokens) noexcept
{
    return fastadasp::wm::workspaceBytes(batch, tokens);
}
