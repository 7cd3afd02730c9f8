// Beam reorder on the device: gathers KV rows of every layer (key and value) from one KV set into the other in a
// single kernel launch, copying only each layer's valid entries. The token ids that decide the order come from
// the host (the beam bookkeeping); the cache itself never leaves the GPU.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace fastadasp
{

struct KvGatherJob
{
    char const* src;    // a layer's key or value buffer [rows, Hkv, C, d] in the current set
    char* dst;          // the same layer's buffer in the other set
    int64_t rowStride;  // bytes of one batch row: Hkv * C * d * element bytes
    int64_t headPitch;  // bytes of one head: C * d * element bytes
    int64_t validBytes; // bytes of valid entries per head: length * d * element bytes
};

// dst[r, h, :valid] = src[index[r], h, :valid] for every job, r < rows, h < heads. `jobs` and `index` are device
// pointers; enqueued on `stream`.
cudaError_t launchKvGather(KvGatherJob const* jobs, int32_t numJobs, int32_t const* index, int32_t rows, int32_t heads,
    cudaStream_t stream);

} // namespace fastadasp
