/*
 * WeightedMerge TensorRT plugin (IPluginV3 with the OneCore / OneBuild / OneRuntime capabilities) and its
 * IPluginCreatorV3One. Contract: plugins/weighted_merge/README.md; exporter side: exporter/merge_op.py.
 *
 * The library exports getCreators() and setLoggerFinder() and never touches a plugin registry itself: built
 * against TensorRT 10 headers, a registry call would go through a vtable that TensorRT-RTX lays out
 * differently, so the loader (registry.load_library) asks the library for its creators instead.
 */
#ifndef FASTADASP_WEIGHTED_MERGE_PLUGIN_H
#define FASTADASP_WEIGHTED_MERGE_PLUGIN_H

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace fastadasp
{
namespace plugin
{

constexpr char const* kWEIGHTED_MERGE_NAME = "WeightedMerge";
constexpr char const* kWEIGHTED_MERGE_VERSION = "1";
constexpr char const* kWEIGHTED_MERGE_NAMESPACE = "fastadasp";
constexpr char const* kRATIO_NUMERATOR_FIELD = "ratio_numerator";

class WeightedMergePlugin final : public nvinfer1::IPluginV3,
                                  public nvinfer1::IPluginV3OneCore,
                                  public nvinfer1::IPluginV3OneBuild,
                                  public nvinfer1::IPluginV3OneRuntime
{
public:
    // inputs
    static constexpr int32_t kX_TENSOR_IDX = 0;        // [B, n, D]  fp32 | fp16 | bf16
    static constexpr int32_t kKEYS_TENSOR_IDX = 1;     // [B, n, K]  type of x
    static constexpr int32_t kRECEIVED_TENSOR_IDX = 2; // [B, n]     fp32
    static constexpr int32_t kNB_INPUTS = 3;
    // outputs
    static constexpr int32_t kMERGED_OUTPUT_IDX = 0;       // [B, n - m, D] type of x
    static constexpr int32_t kSOURCE_INDEX_OUTPUT_IDX = 1; // [B, n - m]    int64
    static constexpr int32_t kNB_OUTPUTS = 2;

    explicit WeightedMergePlugin(int32_t ratioNumerator);
    WeightedMergePlugin(WeightedMergePlugin const& other);
    WeightedMergePlugin& operator=(WeightedMergePlugin const&) = delete;
    ~WeightedMergePlugin() override = default;

    int32_t ratioNumerator() const noexcept
    {
        return mRatioNumerator;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept override;
    int32_t getNbTactics() noexcept override;
    char const* getTimingCacheID() noexcept override;
    int32_t getFormatCombinationLimit() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t setTactic(int32_t tactic) noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void bindFields();

    int32_t mRatioNumerator;
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class WeightedMergePluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    WeightedMergePluginCreator();
    ~WeightedMergePluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace fastadasp

// The library's entry points (C linkage, default visibility; everything else is hidden).
extern "C"
{
    //! Creators this library provides; TensorRT and TensorRT-RTX call it from IPluginRegistry::loadLibrary().
    __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
        int32_t& nbCreators) noexcept;
    //! Lets the loader hand over its logger; plugin errors are reported through it.
    __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
    //! The last error a plugin method reported in this process ("" if none); for the C++ harness and tests.
    __attribute__((visibility("default"))) char const* fastadasp_weighted_merge_last_error() noexcept;
    //! The kernels without TensorRT (GPU tests and scripts/bench_plugin_gpu.py): device pointers, a cudaStream_t.
    //! type: 0 fp32, 1 fp16, 2 bf16. Returns the cudaError_t value (0 on success).
    __attribute__((visibility("default"))) int32_t fastadasp_weighted_merge_enqueue(int32_t type, int64_t batch,
        int64_t tokens, int64_t hidden, int64_t keyDim, int32_t ratioNumerator, void const* x, void const* keys,
        float const* received, void* merged, int64_t* sourceIndex, void* workspace, size_t workspaceBytes,
        void* stream) noexcept;
    //! Workspace bytes fastadasp_weighted_merge_enqueue needs for up to batch x tokens.
    __attribute__((visibility("default"))) size_t fastadasp_weighted_merge_workspace_bytes(
        int64_t batch, int64_t tokens) noexcept;
}

#endif // FASTADASP_WEIGHTED_MERGE_PLUGIN_H
