/*
 * CPU twin of the WeightedMerge kernels: the same stages over the kernels' index space, run in order, with
 * every number computed by the shared weightedMergeMath.h. Where a kernel relies on a CUB primitive, the twin
 * uses a library algorithm with the same defined result: std::sort for the radix sort of unique composite keys
 * and a running sum for the block scan. A C ABI (loaded with ctypes by fastadasp.plugins.cpu) makes it
 * testable against the PyTorch reference without a GPU.
 */
#include "weightedMergeMath.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#define WM_EXPORT extern "C" __attribute__((visibility("default")))

namespace fastadasp
{
namespace wm
{
namespace
{

thread_local std::string gCpuLastError;

bool aligned16(void const* p)
{
    return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

// Stage 1 (keyStatsKernel): per token, the 32 lane partials and the warp butterfly.
template <typename Traits, int V>
void keyStats(typename Traits::Storage const* keys, int64_t rows, int64_t tokens, int64_t keyDim,
    std::vector<float>& squares, std::vector<float>& dots)
{
    for (int64_t t = 0; t < rows * tokens; ++t)
    {
        int64_t const j = t % tokens;
        auto const* row = keys + t * keyDim;
        auto const* next = (j + 1 < tokens) ? row + keyDim : nullptr;
        float sq[kWarpSize];
        float dot[kWarpSize];
        for (int lane = 0; lane < kWarpSize; ++lane)
        {
            lanePartials<Traits, V>(row, next, keyDim, lane, sq[lane], dot[lane]);
        }
        squares[t] = warpButterflySumHost(sq);
        float const d = warpButterflySumHost(dot);
        dots[t] = next != nullptr ? d : 0.0f;
    }
}

template <typename Traits>
void keyStatsDispatch(void const* keysRaw, int64_t rows, int64_t tokens, int64_t keyDim, std::vector<float>& squares,
    std::vector<float>& dots)
{
    using Storage = typename Traits::Storage;
    constexpr int kVec = kVectorBytes / static_cast<int>(sizeof(Storage));
    auto const* keys = static_cast<Storage const*>(keysRaw);
    if (vectorWidth(keyDim, sizeof(Storage), aligned16(keysRaw)) == kVec)
    {
        keyStats<Traits, kVec>(keys, rows, tokens, keyDim, squares, dots);
    }
    else
    {
        keyStats<Traits, 1>(keys, rows, tokens, keyDim, squares, dots);
    }
}

// Stage 2 (selectInBlockKernel / the device-sort path): composite keys, sorted; the first m edges are picked;
// a token starting a group gets the next group id (an exclusive sum of the start flags).
void selectGroups(std::vector<float> const& squares, std::vector<float> const& dots, int64_t rows, int64_t tokens,
    int64_t merged, std::vector<int32_t>& groupStart, int64_t* sourceIndex)
{
    int64_t const kept = tokens - merged;
    int64_t const edges = tokens - 1;
    int const indexBits = edgeIndexBits(edges);
    std::vector<uint64_t> keys(static_cast<size_t>(std::max<int64_t>(edges, 0)));
    std::vector<uint8_t> picked(static_cast<size_t>(tokens));
    for (int64_t b = 0; b < rows; ++b)
    {
        float const* rowSquares = squares.data() + b * tokens;
        float const* rowDots = dots.data() + b * tokens;
        for (int64_t e = 0; e < edges; ++e)
        {
            keys[e] = compositeKey(cosineFromParts(rowDots[e], rowSquares[e], rowSquares[e + 1]), uint32_t(e), indexBits);
        }
        std::sort(keys.begin(), keys.end());
        std::fill(picked.begin(), picked.end(), uint8_t{0});
        for (int64_t r = 0; r < merged; ++r)
        {
            picked[compositeKeyEdge(keys[r], indexBits)] = 1;
        }
        int64_t group = 0;
        for (int64_t j = 0; j < tokens; ++j)
        {
            if (startsGroup(j, picked.data()))
            {
                groupStart[b * kept + group] = static_cast<int32_t>(j);
                sourceIndex[b * kept + group] = j;
                ++group;
            }
        }
        if (group != kept)
        {
            throw std::logic_error("group count differs from n - m");
        }
    }
}

// Stage 3 (mergeKernel): one output element at a time; members in order, exactly as each kernel thread runs.
template <typename Traits>
void mergeGroups(void const* xRaw, float const* received, std::vector<int32_t> const& groupStart, int64_t rows,
    int64_t tokens, int64_t kept, int64_t hidden, void* mergedRaw)
{
    using Storage = typename Traits::Storage;
    auto const* x = static_cast<Storage const*>(xRaw);
    auto* merged = static_cast<Storage*>(mergedRaw);
    std::vector<float> acc(static_cast<size_t>(hidden));
    for (int64_t outRow = 0; outRow < rows * kept; ++outRow)
    {
        int64_t const b = outRow / kept;
        int64_t const g = outRow % kept;
        int64_t const start = groupStart[outRow];
        int64_t const end = g + 1 < kept ? groupStart[outRow + 1] : tokens;
        std::fill(acc.begin(), acc.end(), 0.0f);
        float weightSum = 0.0f;
        for (int64_t j = start; j < end; ++j)
        {
            float const w = received[b * tokens + j];
            Storage const* row = x + (b * tokens + j) * hidden;
            for (int64_t e = 0; e < hidden; ++e)
            {
                accumulateMember(w, Traits::toFloat(row[e]), acc[e]);
            }
            accumulateWeight(w, weightSum);
        }
        for (int64_t e = 0; e < hidden; ++e)
        {
            merged[outRow * hidden + e] = Traits::fromFloat(weightedMean(acc[e], weightSum));
        }
    }
}

template <typename Traits>
void runTyped(int64_t rows, int64_t tokens, int64_t hidden, int64_t keyDim, int32_t q, void const* x, void const* keys,
    float const* received, void* merged, int64_t* sourceIndex)
{
    using Storage = typename Traits::Storage;
    int64_t const m = numMerged(tokens, q);
    if (m == 0) // pass-through, as the kernels' memcpy + identity index
    {
        std::memcpy(merged, x, size_t(rows) * size_t(tokens) * size_t(hidden) * sizeof(Storage));
        for (int64_t k = 0; k < rows * tokens; ++k)
        {
            sourceIndex[k] = k % tokens;
        }
        return;
    }
    int64_t const kept = tokens - m;
    std::vector<float> squares(size_t(rows * tokens));
    std::vector<float> dots(size_t(rows * tokens));
    std::vector<int32_t> groupStart(size_t(rows * kept));
    keyStatsDispatch<Traits>(keys, rows, tokens, keyDim, squares, dots);
    selectGroups(squares, dots, rows, tokens, m, groupStart, sourceIndex);
    mergeGroups<Traits>(x, received, groupStart, rows, tokens, kept, hidden, merged);
}

int fail(char const* message)
{
    gCpuLastError = message;
    return 1;
}

bool validType(int32_t type)
{
    return type == int32_t(ElementType::kFLOAT32) || type == int32_t(ElementType::kFLOAT16)
        || type == int32_t(ElementType::kBFLOAT16);
}

} // namespace
} // namespace wm
} // namespace fastadasp

using namespace fastadasp::wm;

//! m = min(n * q // 65536, max(n - 1, 0)), the length rule every stage shares.
WM_EXPORT int64_t fastadasp_wm_num_merged(int64_t n, int64_t q)
{
    return numMerged(n, q);
}

//! The merge on the CPU. type: 0 fp32, 1 fp16, 2 bf16 (x, keys and merged; 16-bit values as raw bits).
//! Returns 0, or 1 with fastadasp_wm_cpu_last_error() saying why.
WM_EXPORT int fastadasp_wm_cpu_merge(int32_t type, int64_t batch, int64_t tokens, int64_t hidden, int64_t keyDim,
    int32_t ratioNumerator, void const* x, void const* keys, float const* received, void* merged, int64_t* sourceIndex)
{
    try
    {
        gCpuLastError.clear();
        if (!validType(type))
        {
            return fail("type must be 0 (fp32), 1 (fp16) or 2 (bf16)");
        }
        if (batch < 0 || tokens < 0 || hidden < 0 || keyDim < 0 || tokens > INT32_MAX)
        {
            return fail("dimensions must be non-negative (and tokens < 2^31)");
        }
        if (ratioNumerator < 0 || ratioNumerator >= kRatioDenominator)
        {
            return fail("ratio_numerator must be in [0, 65535]");
        }
        if (batch == 0 || tokens == 0)
        {
            return 0;
        }
        switch (static_cast<ElementType>(type))
        {
        case ElementType::kFLOAT32:
            runTyped<Fp32>(batch, tokens, hidden, keyDim, ratioNumerator, x, keys, received, merged, sourceIndex);
            break;
        case ElementType::kFLOAT16:
            runTyped<Fp16>(batch, tokens, hidden, keyDim, ratioNumerator, x, keys, received, merged, sourceIndex);
            break;
        case ElementType::kBFLOAT16:
            runTyped<Bf16>(batch, tokens, hidden, keyDim, ratioNumerator, x, keys, received, merged, sourceIndex);
            break;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(e.what());
    }
    catch (...)
    {
        return fail("unknown exception");
    }
}

//! The fp32 cosines the kernels rank, [batch, tokens - 1], for margin checks in tests.
WM_EXPORT int fastadasp_wm_cpu_similarity(
    int32_t type, int64_t batch, int64_t tokens, int64_t keyDim, void const* keys, float* similarity)
{
    try
    {
        gCpuLastError.clear();
        if (!validType(type) || batch < 0 || tokens < 0 || keyDim < 0)
        {
            return fail("bad type or dimensions");
        }
        std::vector<float> squares(size_t(batch * tokens));
        std::vector<float> dots(size_t(batch * tokens));
        switch (static_cast<ElementType>(type))
        {
        case ElementType::kFLOAT32: keyStatsDispatch<Fp32>(keys, batch, tokens, keyDim, squares, dots); break;
        case ElementType::kFLOAT16: keyStatsDispatch<Fp16>(keys, batch, tokens, keyDim, squares, dots); break;
        case ElementType::kBFLOAT16: keyStatsDispatch<Bf16>(keys, batch, tokens, keyDim, squares, dots); break;
        }
        for (int64_t b = 0; b < batch; ++b)
        {
            for (int64_t e = 0; e + 1 < tokens; ++e)
            {
                int64_t const t = b * tokens + e;
                similarity[b * (tokens - 1) + e] = cosineFromParts(dots[t], squares[t], squares[t + 1]);
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(e.what());
    }
    catch (...)
    {
        return fail("unknown exception");
    }
}

//! fp32 -> fp16 / bf16 bits with the kernels' rounding (type 1 or 2), for conversion tests.
WM_EXPORT int fastadasp_wm_cpu_from_float(int32_t type, float const* in, uint16_t* out, int64_t count)
{
    if (type != int32_t(ElementType::kFLOAT16) && type != int32_t(ElementType::kBFLOAT16))
    {
        return fail("type must be 1 (fp16) or 2 (bf16)");
    }
    for (int64_t i = 0; i < count; ++i)
    {
        out[i] = type == int32_t(ElementType::kFLOAT16) ? floatToHalfBits(in[i]) : floatToBf16Bits(in[i]);
    }
    return 0;
}

//! fp16 / bf16 bits -> fp32 (type 1 or 2).
WM_EXPORT int fastadasp_wm_cpu_to_float(int32_t type, uint16_t const* in, float* out, int64_t count)
{
    if (type != int32_t(ElementType::kFLOAT16) && type != int32_t(ElementType::kBFLOAT16))
    {
        return fail("type must be 1 (fp16) or 2 (bf16)");
    }
    for (int64_t i = 0; i < count; ++i)
    {
        out[i] = type == int32_t(ElementType::kFLOAT16) ? halfBitsToFloat(in[i]) : bf16BitsToFloat(in[i]);
    }
    return 0;
}

WM_EXPORT char const* fastadasp_wm_cpu_last_error()
{
    return gCpuLastError.c_str();
}
