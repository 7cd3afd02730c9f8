/*
 * Plain launcher for the WeightedMerge CUDA kernels (no TensorRT types): the plugin's enqueue() calls it, and so
 * can any other host code with device buffers and a stream.
 */
#ifndef FASTADASP_WEIGHTED_MERGE_KERNEL_H
#define FASTADASP_WEIGHTED_MERGE_KERNEL_H

#include "weightedMergeMath.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace fastadasp
{
namespace wm
{

//! One merge call: x [batch, tokens, hidden], keys [batch, tokens, keyDim], received [batch, tokens] (fp32).
struct MergeProblem
{
    int64_t batch{0};
    int64_t tokens{0};
    int64_t hidden{0};
    int64_t keyDim{0};
    int32_t ratioNumerator{0};
    ElementType type{ElementType::kFLOAT32};
};

//! Rows with at most this many tokens select their edges in one thread block (BlockRadixSort in shared
//! memory); longer rows go through a device-wide segmented radix sort.
constexpr int64_t kBlockSelectMaxTokens = 4096;

//! Scratch bytes the kernels need for up to `batch` rows of up to `tokens` tokens. Pure arithmetic (no CUDA
//! call), so TensorRT can ask for it at build time on a machine without a GPU.
size_t workspaceBytes(int64_t batch, int64_t tokens) noexcept;

//! Enqueue the merge on `stream`: merged [batch, tokens - m, hidden] (type of x) and sourceIndex
//! [batch, tokens - m] (int64). Returns cudaSuccess or the first error; never throws.
cudaError_t launchWeightedMerge(MergeProblem const& problem, void const* x, void const* keys, float const* received,
    void* merged, int64_t* sourceIndex, void* workspace, size_t workspaceSize, cudaStream_t stream) noexcept;

} // namespace wm
} // namespace fastadasp

#endif // FASTADASP_WEIGHTED_MERGE_KERNEL_H
