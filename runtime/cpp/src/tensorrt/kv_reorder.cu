#include "kv_reorder.h"

namespace fastadasp
{
namespace
{

constexpr int kThreads = 256;

__device__ inline bool aligned(void const* p, uintptr_t to)
{
    return (reinterpret_cast<uintptr_t>(p) & (to - 1)) == 0;
}

// One block per (job, row, head): a contiguous run of validBytes, copied with the widest aligned word.
__global__ void kvGatherKernel(KvGatherJob const* jobs, int32_t const* index, int32_t rows, int32_t heads)
{
    int64_t block = blockIdx.x;
    int32_t const head = static_cast<int32_t>(block % heads);
    block /= heads;
    int32_t const row = static_cast<int32_t>(block % rows);
    int32_t const job = static_cast<int32_t>(block / rows);
    KvGatherJob const j = jobs[job];
    char const* src = j.src + index[row] * j.rowStride + head * j.headPitch;
    char* dst = j.dst + row * j.rowStride + head * j.headPitch;
    if (j.validBytes % 16 == 0 && aligned(src, 16) && aligned(dst, 16))
    {
        auto const* s = reinterpret_cast<uint4 const*>(src);
        auto* d = reinterpret_cast<uint4*>(dst);
        for (int64_t i = threadIdx.x; i < j.validBytes / 16; i += blockDim.x)
        {
            d[i] = s[i];
        }
    }
    else if (j.validBytes % 4 == 0 && aligned(src, 4) && aligned(dst, 4))
    {
        auto const* s = reinterpret_cast<uint32_t const*>(src);
        auto* d = reinterpret_cast<uint32_t*>(dst);
        for (int64_t i = threadIdx.x; i < j.validBytes / 4; i += blockDim.x)
        {
            d[i] = s[i];
        }
    }
    else
    {
        for (int64_t i = threadIdx.x; i < j.validBytes; i += blockDim.x)
        {
            dst[i] = src[i];
        }
    }
}

} // namespace

cudaError_t launchKvGather(KvGatherJob const* jobs, int32_t numJobs, int32_t const* index, int32_t rows, int32_t heads,
    cudaStream_t stream)
{
    if (numJobs <= 0 || rows <= 0 || heads <= 0)
    {
        return cudaSuccess;
    }
    unsigned int blocks = static_cast<unsigned int>(static_cast<int64_t>(numJobs) * rows * heads);
    kvGatherKernel<<<blocks, kThreads, 0, stream>>>(jobs, index, rows, heads);
    return cudaGetLastError();
}

} // namespace fastadasp
