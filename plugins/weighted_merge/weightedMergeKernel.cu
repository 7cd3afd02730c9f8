/*
 * WeightedMerge CUDA kernels. Stages per call (all on the caller's stream, scratch from the workspace):
 *   1. keyStatsKernel   one warp per token: |k_j|^2 and <k_j, k_{j+1}> in fp32 (16-byte loads when aligned)
 *   2. edge selection   rows of <= kBlockSelectMaxTokens tokens: one block per row builds the composite keys,
 *                       sorts them with cub::BlockRadixSort, marks the first m edges and numbers the groups
 *                       with cub::BlockScan. Longer rows: compositeKeysKernel + cub::DeviceSegmentedRadixSort
 *                       + markPickedKernel + groupStartsKernel (tiled BlockScan with a running prefix).
 *   3. mergeKernel      one thread per (group, 16-byte slice of the hidden vector): the weighted mean of the
 *                       group's members; x is read once and merged written once.
 * Every number comes from weightedMergeMath.h, which the CPU twin (weightedMergeCpu.cpp) shares.
 */
#include "weightedMergeKernel.h"

#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <climits>

namespace fastadasp
{
namespace wm
{
namespace
{

constexpr int kThreads = 256;       // element-wise kernels
constexpr int kSelectThreads = 512; // one block per row
constexpr int kSelectItems = static_cast<int>(kBlockSelectMaxTokens / kSelectThreads);
static_assert(kSelectThreads * kSelectItems == kBlockSelectMaxTokens, "block select tile must cover the row");
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20; // grid-stride loops cover the rest
constexpr size_t kAlign = 256;
// DeviceSegmentedRadixSort with a DoubleBuffer needs only alignment slack (255 bytes in CUB 2.x/3.x); the
// enqueue-time query checks that this budget really suffices before the sort runs.
constexpr size_t kCubTempBudget = 64 * 1024;

size_t alignUp(size_t bytes)
{
    return (bytes + kAlign - 1) / kAlign * kAlign;
}

struct WorkspaceLayout
{
    size_t squares{0}, dots{0}, groupStart{0}, picked{0}, keysA{0}, keysB{0}, segmentOffsets{0}, cubTemp{0};
    size_t total{0};
};

WorkspaceLayout layoutFor(int64_t batch, int64_t tokens)
{
    size_t const rows = static_cast<size_t>(std::max<int64_t>(batch, 0));
    size_t const n = static_cast<size_t>(std::max<int64_t>(tokens, 1));
    size_t const edges = std::max<size_t>(n - 1, 1);
    WorkspaceLayout l;
    size_t at = 0;
    auto take = [&at](size_t bytes) {
        size_t const here = at;
        at += alignUp(bytes);
        return here;
    };
    l.squares = take(rows * n * sizeof(float));
    l.dots = take(rows * n * sizeof(float));
    l.groupStart = take(rows * n * sizeof(int32_t));
    l.picked = take(rows * n * sizeof(uint8_t));
    bool const deviceSort = tokens > kBlockSelectMaxTokens;
    l.keysA = take(deviceSort ? rows * edges * sizeof(uint64_t) : 0);
    l.keysB = take(deviceSort ? rows * edges * sizeof(uint64_t) : 0);
    l.segmentOffsets = take(deviceSort ? (rows + 1) * sizeof(int32_t) : 0);
    l.cubTemp = take(deviceSort ? kCubTempBudget : 0);
    l.total = at + kAlign; // slack to align the base pointer
    return l;
}

template <typename T>
T* at(void* base, size_t offset)
{
    return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

bool aligned16(void const* p)
{
    return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

unsigned gridFor(int64_t work, int64_t perBlock)
{
    int64_t const blocks = (work + perBlock - 1) / perBlock;
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGridBlocks)));
}

__device__ __forceinline__ float warpButterflySum(float v)
{
    // Same rounds as warpButterflySumHost: own value + the partner's, xor offsets 16..1.
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    {
        v = v + __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// ----------------------------------------------------------------------------------------------- stage 1

template <typename Traits, int V>
__global__ void keyStatsKernel(typename Traits::Storage const* __restrict__ keys, int64_t rows, int64_t tokens,
    int64_t keyDim, float* __restrict__ squares, float* __restrict__ dots)
{
    int const lane = threadIdx.x % kWarpSize;
    int64_t const warpsPerGrid = int64_t(gridDim.x) * (blockDim.x / kWarpSize);
    int64_t const total = rows * tokens;
    for (int64_t t = int64_t(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize; t < total;
         t += warpsPerGrid)
    {
        int64_t const j = t % tokens;
        auto const* row = keys + t * keyDim;
        auto const* next = (j + 1 < tokens) ? row + keyDim : nullptr;
        float sq, dot;
        lanePartials<Traits, V>(row, next, keyDim, lane, sq, dot);
        sq = warpButterflySum(sq);
        dot = warpButterflySum(dot);
        if (lane == 0)
        {
            squares[t] = sq;
            dots[t] = next != nullptr ? dot : 0.0f;
        }
    }
}

// ----------------------------------------------------------------------------------------------- stage 2a

__global__ void __launch_bounds__(kSelectThreads) selectInBlockKernel(float const* __restrict__ squares,
    float const* __restrict__ dots, int64_t tokens, int64_t merged, int indexBits, int32_t* __restrict__ groupStart,
    int64_t* __restrict__ sourceIndex)
{
    using Sort = cub::BlockRadixSort<uint64_t, kSelectThreads, kSelectItems>;
    using Scan = cub::BlockScan<int32_t, kSelectThreads>;
    __shared__ union
    {
        typename Sort::TempStorage sort;
        typename Scan::TempStorage scan;
    } temp;
    __shared__ uint8_t picked[kBlockSelectMaxTokens];

    int64_t const b = blockIdx.x;
    int64_t const kept = tokens - merged;
    int64_t const edges = tokens - 1;
    float const* rowSquares = squares + b * tokens;
    float const* rowDots = dots + b * tokens;

    uint64_t keys[kSelectItems];
    for (int i = 0; i < kSelectItems; ++i)
    {
        int64_t const e = int64_t(threadIdx.x) * kSelectItems + i;
        keys[i] = e < edges
            ? compositeKey(cosineFromParts(rowDots[e], rowSquares[e], rowSquares[e + 1]), uint32_t(e), indexBits)
            : kPaddingKey;
    }
    for (int e = threadIdx.x; e < kBlockSelectMaxTokens; e += kSelectThreads)
    {
        picked[e] = 0;
    }
    Sort(temp.sort).Sort(keys, 0, 32 + indexBits); // blocked result: thread t holds ranks t*ITEMS ...
    __syncthreads();
    for (int i = 0; i < kSelectItems; ++i)
    {
        int64_t const rank = int64_t(threadIdx.x) * kSelectItems + i;
        if (rank < merged)
        {
            picked[compositeKeyEdge(keys[i], indexBits)] = 1;
        }
    }
    __syncthreads();

    int32_t starts[kSelectItems];
    int32_t groups[kSelectItems];
    for (int i = 0; i < kSelectItems; ++i)
    {
        int64_t const j = int64_t(threadIdx.x) * kSelectItems + i;
        starts[i] = (j < tokens && startsGroup(j, picked)) ? 1 : 0;
    }
    Scan(temp.scan).ExclusiveSum(starts, groups); // group id of a start = starts before it
    for (int i = 0; i < kSelectItems; ++i)
    {
        if (starts[i])
        {
            int32_t const j = threadIdx.x * kSelectItems + i;
            groupStart[b * kept + groups[i]] = j;
            sourceIndex[b * kept + groups[i]] = j;
        }
    }
}

// ----------------------------------------------------------------------------------------------- stage 2b

__global__ void compositeKeysKernel(float const* __restrict__ squares, float const* __restrict__ dots, int64_t rows,
    int64_t tokens, int indexBits, uint64_t* __restrict__ keys)
{
    int64_t const edges = tokens - 1;
    int64_t const total = rows * edges;
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x)
    {
        int64_t const b = k / edges;
        int64_t const e = k % edges;
        int64_t const t = b * tokens + e;
        keys[k] = compositeKey(cosineFromParts(dots[t], squares[t], squares[t + 1]), uint32_t(e), indexBits);
    }
}

__global__ void segmentOffsetsKernel(int64_t rows, int64_t edges, int32_t* __restrict__ offsets)
{
    for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b <= rows; b += int64_t(gridDim.x) * blockDim.x)
    {
        offsets[b] = static_cast<int32_t>(b * edges);
    }
}

__global__ void markPickedKernel(uint64_t const* __restrict__ sortedKeys, int64_t rows, int64_t tokens,
    int64_t merged, int indexBits, uint8_t* __restrict__ picked)
{
    int64_t const edges = tokens - 1;
    int64_t const total = rows * merged;
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x)
    {
        int64_t const b = k / merged;
        int64_t const rank = k % merged;
        picked[b * tokens + compositeKeyEdge(sortedKeys[b * edges + rank], indexBits)] = 1;
    }
}

__global__ void __launch_bounds__(kSelectThreads) groupStartsKernel(uint8_t const* __restrict__ picked,
    int64_t tokens, int64_t merged, int32_t* __restrict__ groupStart, int64_t* __restrict__ sourceIndex)
{
    using Scan = cub::BlockScan<int32_t, kSelectThreads>;
    __shared__ typename Scan::TempStorage temp;
    int64_t const b = blockIdx.x;
    int64_t const kept = tokens - merged;
    uint8_t const* rowPicked = picked + b * tokens;
    int64_t before = 0; // groups started in earlier tiles
    for (int64_t tile = 0; tile < tokens; tile += kBlockSelectMaxTokens)
    {
        int32_t starts[kSelectItems];
        int32_t groups[kSelectItems];
        for (int i = 0; i < kSelectItems; ++i)
        {
            int64_t const j = tile + int64_t(threadIdx.x) * kSelectItems + i;
            starts[i] = (j < tokens && startsGroup(j, rowPicked)) ? 1 : 0;
        }
        int32_t tileTotal = 0;
        Scan(temp).ExclusiveSum(starts, groups, tileTotal);
        for (int i = 0; i < kSelectItems; ++i)
        {
            if (starts[i])
            {
                int64_t const j = tile + int64_t(threadIdx.x) * kSelectItems + i;
                int64_t const g = before + groups[i];
                groupStart[b * kept + g] = static_cast<int32_t>(j);
                sourceIndex[b * kept + g] = j;
            }
        }
        before += tileTotal;
        __syncthreads(); // temp storage is reused by the next tile
    }
}

// ----------------------------------------------------------------------------------------------- stage 3

template <typename Traits, int V>
__global__ void mergeKernel(typename Traits::Storage const* __restrict__ x, float const* __restrict__ received,
    int32_t const* __restrict__ groupStart, int64_t rows, int64_t tokens, int64_t kept, int64_t hidden,
    typename Traits::Storage* __restrict__ merged)
{
    using Storage = typename Traits::Storage;
    int64_t const vectorsPerRow = hidden / V;
    int64_t const total = rows * kept * vectorsPerRow;
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x)
    {
        int64_t const vec = k % vectorsPerRow;
        int64_t const outRow = k / vectorsPerRow; // b * kept + g
        int64_t const b = outRow / kept;
        int64_t const g = outRow % kept;
        int64_t const start = groupStart[outRow];
        int64_t const end = g + 1 < kept ? groupStart[outRow + 1] : tokens;
        float acc[V];
        for (int e = 0; e < V; ++e)
        {
            acc[e] = 0.0f;
        }
        float weightSum = 0.0f;
        for (int64_t j = start; j < end; ++j)
        {
            float const w = received[b * tokens + j];
            Storage values[V];
            loadVector<Storage, V>(x + (b * tokens + j) * hidden + vec * V, values);
            for (int e = 0; e < V; ++e)
            {
                accumulateMember(w, Traits::toFloat(values[e]), acc[e]);
            }
            accumulateWeight(w, weightSum);
        }
        Storage out[V];
        for (int e = 0; e < V; ++e)
        {
            out[e] = Traits::fromFloat(weightedMean(acc[e], weightSum));
        }
        storeVector<Storage, V>(merged + outRow * hidden + vec * V, out);
    }
}

__global__ void identityIndexKernel(int64_t rows, int64_t tokens, int64_t* __restrict__ sourceIndex)
{
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < rows * tokens;
         k += int64_t(gridDim.x) * blockDim.x)
    {
        sourceIndex[k] = k % tokens;
    }
}

// ----------------------------------------------------------------------------------------------- launch

template <typename Traits>
cudaError_t launchTyped(MergeProblem const& p, void const* xRaw, void const* keysRaw, float const* received,
    void* mergedRaw, int64_t* sourceIndex, void* workspace, size_t workspaceSize, cudaStream_t stream)
{
    using Storage = typename Traits::Storage;
    constexpr int kVec = kVectorBytes / static_cast<int>(sizeof(Storage));
    auto const* x = static_cast<Storage const*>(xRaw);
    auto const* keys = static_cast<Storage const*>(keysRaw);
    auto* merged = static_cast<Storage*>(mergedRaw);
    int64_t const rows = p.batch;
    int64_t const n = p.tokens;
    int64_t const m = numMerged(n, p.ratioNumerator);
    int64_t const kept = n - m;

    if (m == 0) // nothing merges: the span passes through unchanged (as in the PyTorch reference)
    {
        size_t const bytes = size_t(rows) * size_t(n) * size_t(p.hidden) * sizeof(Storage);
        if (bytes > 0 && mergedRaw != xRaw)
        {
            cudaError_t const err = cudaMemcpyAsync(mergedRaw, xRaw, bytes, cudaMemcpyDeviceToDevice, stream);
            if (err != cudaSuccess)
            {
                return err;
            }
        }
        identityIndexKernel<<<gridFor(rows * n, kThreads), kThreads, 0, stream>>>(rows, n, sourceIndex);
        return cudaGetLastError();
    }

    WorkspaceLayout const layout = layoutFor(rows, n);
    if (workspace == nullptr || workspaceSize < layout.total)
    {
        return cudaErrorInvalidValue;
    }
    void* base = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(workspace) + kAlign - 1) / kAlign * kAlign);
    float* squares = at<float>(base, layout.squares);
    float* dots = at<float>(base, layout.dots);
    int32_t* groupStart = at<int32_t>(base, layout.groupStart);

    // Stage 1: key statistics, one warp per token.
    {
        int const warpsPerBlock = kThreads / kWarpSize;
        unsigned const grid = gridFor(rows * n, warpsPerBlock);
        if (vectorWidth(p.keyDim, sizeof(Storage), aligned16(keys)) == kVec)
        {
            keyStatsKernel<Traits, kVec><<<grid, kThreads, 0, stream>>>(keys, rows, n, p.keyDim, squares, dots);
        }
        else
        {
            keyStatsKernel<Traits, 1><<<grid, kThreads, 0, stream>>>(keys, rows, n, p.keyDim, squares, dots);
        }
        cudaError_t const err = cudaGetLastError();
        if (err != cudaSuccess)
        {
            return err;
        }
    }

    // Stage 2: top-m edges per row and the first token of every group.
    int const indexBits = edgeIndexBits(n - 1);
    if (n <= kBlockSelectMaxTokens)
    {
        selectInBlockKernel<<<static_cast<unsigned>(rows), kSelectThreads, 0, stream>>>(
            squares, dots, n, m, indexBits, groupStart, sourceIndex);
        cudaError_t const err = cudaGetLastError();
        if (err != cudaSuccess)
        {
            return err;
        }
    }
    else
    {
        if (rows * (n - 1) > INT_MAX)
        {
            return cudaErrorInvalidValue; // CUB's segmented sort counts items in int
        }
        auto* keysA = at<uint64_t>(base, layout.keysA);
        auto* keysB = at<uint64_t>(base, layout.keysB);
        auto* offsets = at<int32_t>(base, layout.segmentOffsets);
        auto* picked = at<uint8_t>(base, layout.picked);
        compositeKeysKernel<<<gridFor(rows * (n - 1), kThreads), kThreads, 0, stream>>>(
            squares, dots, rows, n, indexBits, keysA);
        segmentOffsetsKernel<<<gridFor(rows + 1, kThreads), kThreads, 0, stream>>>(rows, n - 1, offsets);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess)
        {
            return err;
        }
        cub::DoubleBuffer<uint64_t> sortKeys(keysA, keysB);
        size_t cubBytes = 0;
        err = cub::DeviceSegmentedRadixSort::SortKeys(nullptr, cubBytes, sortKeys, static_cast<int>(rows * (n - 1)),
            static_cast<int>(rows), offsets, offsets + 1, 0, 32 + indexBits, stream);
        if (err != cudaSuccess)
        {
            return err;
        }
        if (cubBytes > kCubTempBudget)
        {
            return cudaErrorMemoryAllocation; // the workspace was sized for less; see kCubTempBudget
        }
        err = cub::DeviceSegmentedRadixSort::SortKeys(at<void>(base, layout.cubTemp), cubBytes, sortKeys,
            static_cast<int>(rows * (n - 1)), static_cast<int>(rows), offsets, offsets + 1, 0, 32 + indexBits, stream);
        if (err != cudaSuccess)
        {
            return err;
        }
        err = cudaMemsetAsync(picked, 0, size_t(rows) * size_t(n), stream);
        if (err != cudaSuccess)
        {
            return err;
        }
        markPickedKernel<<<gridFor(rows * m, kThreads), kThreads, 0, stream>>>(
            sortKeys.Current(), rows, n, m, indexBits, picked);
        groupStartsKernel<<<static_cast<unsigned>(rows), kSelectThreads, 0, stream>>>(
            picked, n, m, groupStart, sourceIndex);
        err = cudaGetLastError();
        if (err != cudaSuccess)
        {
            return err;
        }
    }

    // Stage 3: weighted group means.
    if (p.hidden > 0)
    {
        bool const wide = vectorWidth(p.hidden, sizeof(Storage), aligned16(x) && aligned16(merged)) == kVec;
        int const v = wide ? kVec : 1;
        unsigned const grid = gridFor(rows * kept * (p.hidden / v), kThreads);
        if (wide)
        {
            mergeKernel<Traits, kVec>
                <<<grid, kThreads, 0, stream>>>(x, received, groupStart, rows, n, kept, p.hidden, merged);
        }
        else
        {
            mergeKernel<Traits, 1><<<grid, kThreads, 0, stream>>>(x, received, groupStart, rows, n, kept, p.hidden, merged);
        }
    }
    return cudaGetLastError();
}

} // namespace

size_t workspaceBytes(int64_t batch, int64_t tokens) noexcept
{
    return layoutFor(batch, tokens).total;
}

cudaError_t launchWeightedMerge(MergeProblem const& problem, void const* x, void const* keys, float const* received,
    void* merged, int64_t* sourceIndex, void* workspace, size_t workspaceSize, cudaStream_t stream) noexcept
{
    if (problem.batch < 0 || problem.tokens < 0 || problem.hidden < 0 || problem.keyDim < 0
        || problem.ratioNumerator < 0 || problem.ratioNumerator >= kRatioDenominator || problem.tokens > INT_MAX)
    {
        return cudaErrorInvalidValue;
    }
    if (problem.batch == 0 || problem.tokens == 0)
    {
        return cudaSuccess;
    }
    switch (problem.type)
    {
    case ElementType::kFLOAT32:
        return launchTyped<Fp32>(problem, x, keys, received, merged, sourceIndex, workspace, workspaceSize, stream);
    case ElementType::kFLOAT16:
        return launchTyped<Fp16>(problem, x, keys, received, merged, sourceIndex, workspace, workspaceSize, stream);
    case ElementType::kBFLOAT16:
        return launchTyped<Bf16>(problem, x, keys, received, merged, sourceIndex, workspace, workspaceSize, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace wm
} // namespace fastadasp
