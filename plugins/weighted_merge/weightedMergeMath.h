/*
 * WeightedMerge per-element math, shared by the CUDA kernels (weightedMergeKernel.cu) and the CPU twin
 * (weightedMergeCpu.cpp). Everything that decides a number lives here, so both builds compute the same
 * values in the same order: the length rule, dtype conversions, the per-lane dot products and their warp
 * butterfly, the cosine, the composite sort key, the group boundary and the weighted mean.
 *
 * Compiled by nvcc (host and device) and by a plain C++ compiler (host only); it needs no CUDA header.
 */
#ifndef FASTADASP_WEIGHTED_MERGE_MATH_H
#define FASTADASP_WEIGHTED_MERGE_MATH_H

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define WM_HD __host__ __device__ __forceinline__
#else
#define WM_HD inline
#endif

namespace fastadasp
{
namespace wm
{

// Ratios are fixed point q / 2^16 (fastadasp/reduction/merge.py, RATIO_DENOMINATOR).
constexpr int64_t kRatioDenominator = int64_t{1} << 16;
// Cosine denominator floor: zero-norm keys get similarity 0 instead of NaN (same constant as the reference).
constexpr float kNormEps = 1e-12f;
// Weight-sum floor of a group mean: the smallest normal fp32 (torch.finfo(torch.float32).tiny).
constexpr float kTinyWeight = 1.17549435082228750797e-38f;
constexpr int kWarpSize = 32;
// The widest load the kernels make, in bytes (one 128-bit transaction per thread).
constexpr int kVectorBytes = 16;

enum class ElementType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
    kBFLOAT16 = 2,
};

WM_HD int elementBytes(ElementType t)
{
    return t == ElementType::kFLOAT32 ? 4 : 2;
}

// ------------------------------------------------------------------------------------------ length rule

// Edges merged in a span of n tokens: m = min(n * q // 2^16, max(n - 1, 0)). n * q < 2^47 for any n < 2^31.
WM_HD int64_t numMerged(int64_t n, int64_t q)
{
    if (n <= 1 || q <= 0)
    {
        return 0;
    }
    int64_t const m = (n * q) / kRatioDenominator;
    return m < n - 1 ? m : n - 1;
}

WM_HD int64_t keptTokens(int64_t n, int64_t q)
{
    return n - numMerged(n, q);
}

// ------------------------------------------------------------------------------------------ bit casts

WM_HD uint32_t floatBits(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u;
#endif
}

WM_HD float bitsToFloat(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
#endif
}

// ------------------------------------------------------------------------------------------ dtypes
// fp16 / bf16 travel as raw 16-bit patterns; the conversions are written out so that host and device round
// identically (round to nearest even, like __float2half_rn / __float2bfloat16_rn and PyTorch's casts).

WM_HD float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = uint32_t(h & 0x8000u) << 16;
    uint32_t const exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1fu) // inf / NaN
    {
        return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent != 0) // normal
    {
        return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    }
    if (mantissa == 0) // signed zero
    {
        return bitsToFloat(sign);
    }
    // subnormal half: normalise into an fp32 normal
    int e = -1;
    do
    {
        ++e;
        mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    return bitsToFloat(sign | uint32_t(112 - e) << 23 | ((mantissa & 0x3ffu) << 13));
}

WM_HD uint16_t floatToHalfBits(float f)
{
    uint32_t const u = floatBits(f);
    uint16_t const sign = uint16_t((u >> 16) & 0x8000u);
    uint32_t const absBits = u & 0x7fffffffu;
    if (absBits > 0x7f800000u) // NaN: keep it quiet
    {
        return uint16_t(sign | 0x7e00u | ((absBits >> 13) & 0x3ffu));
    }
    if (absBits >= 0x477ff000u) // rounds to or beyond 2^16: infinity
    {
        return uint16_t(sign | 0x7c00u);
    }
    int32_t const exponent = int32_t(absBits >> 23) - 127;
    if (exponent >= -14) // normal half
    {
        uint32_t const mant = absBits & 0x7fffffu;
        uint32_t half = uint32_t(exponent + 15) << 10 | (mant >> 13);
        uint32_t const rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        {
            ++half; // a carry into the exponent is the correct rounding
        }
        return uint16_t(sign | half);
    }
    if (exponent < -25) // below half the smallest subnormal: zero
    {
        return sign;
    }
    // subnormal half: value = mant24 * 2^(exponent - 23), unit 2^-24
    uint32_t const mant24 = (absBits & 0x7fffffu) | 0x800000u;
    int const shift = -exponent - 1; // 14..24
    uint32_t half = mant24 >> shift;
    uint32_t const rest = mant24 & ((1u << shift) - 1u);
    uint32_t const halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u)))
    {
        ++half;
    }
    return uint16_t(sign | half);
}

WM_HD float bf16BitsToFloat(uint16_t b)
{
    return bitsToFloat(uint32_t(b) << 16);
}

WM_HD uint16_t floatToBf16Bits(float f)
{
    uint32_t const u = floatBits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: keep it quiet
    {
        return uint16_t((u >> 16) | 0x40u);
    }
    uint32_t const rounding = 0x7fffu + ((u >> 16) & 1u);
    return uint16_t((u + rounding) >> 16);
}

// Storage traits: how one element is stored and read as fp32.
struct Fp32
{
    using Storage = float;
    static constexpr ElementType kType = ElementType::kFLOAT32;
    WM_HD static float toFloat(float v)
    {
        return v;
    }
    WM_HD static float fromFloat(float v)
    {
        return v;
    }
};

struct Fp16
{
    using Storage = uint16_t;
    static constexpr ElementType kType = ElementType::kFLOAT16;
    WM_HD static float toFloat(uint16_t v)
    {
        return halfBitsToFloat(v);
    }
    WM_HD static uint16_t fromFloat(float v)
    {
        return floatToHalfBits(v);
    }
};

struct Bf16
{
    using Storage = uint16_t;
    static constexpr ElementType kType = ElementType::kBFLOAT16;
    WM_HD static float toFloat(uint16_t v)
    {
        return bf16BitsToFloat(v);
    }
    WM_HD static uint16_t fromFloat(float v)
    {
        return floatToBf16Bits(v);
    }
};

// ------------------------------------------------------------------------------------------ vector loads

// Elements per load for rows of rowLength elements: 16 bytes when every row start is 16-byte aligned (the
// base pointer is and the row length is a multiple of the vector), else 1. The choice fixes which elements a
// warp lane sums, so host and device must make it the same way.
WM_HD int vectorWidth(int64_t rowLength, int bytesPerElement, bool base16ByteAligned)
{
    int const v = kVectorBytes / bytesPerElement;
    return (base16ByteAligned && rowLength % v == 0) ? v : 1;
}

template <typename Storage, int V>
WM_HD void loadVector(Storage const* src, Storage (&dst)[V])
{
#if defined(__CUDA_ARCH__)
    if constexpr (V * sizeof(Storage) == 16)
    {
        uint4 const raw = *reinterpret_cast<uint4 const*>(src);
        static_assert(sizeof(raw) == sizeof(dst), "vector size");
        memcpy(&dst, &raw, sizeof(raw));
    }
    else
#endif
    {
        for (int e = 0; e < V; ++e)
        {
            dst[e] = src[e];
        }
    }
}

template <typename Storage, int V>
WM_HD void storeVector(Storage* dst, Storage const (&src)[V])
{
#if defined(__CUDA_ARCH__)
    if constexpr (V * sizeof(Storage) == 16)
    {
        uint4 raw;
        memcpy(&raw, &src, sizeof(raw));
        *reinterpret_cast<uint4*>(dst) = raw;
    }
    else
#endif
    {
        for (int e = 0; e < V; ++e)
        {
            dst[e] = src[e];
        }
    }
}

// ------------------------------------------------------------------------------------------ similarity

// Partial sums of one warp lane over a key row a (and its right neighbour b, or nullptr for the last token):
// the lane reads vectors lane, lane + 32, ... of V elements each and accumulates them in element order with
// fused multiply-adds (explicit fmaf, so the host result does not depend on compiler contraction).
template <typename Traits, int V>
WM_HD void lanePartials(typename Traits::Storage const* a, typename Traits::Storage const* b, int64_t length,
    int lane, float& squareSum, float& dotSum)
{
    using Storage = typename Traits::Storage;
    squareSum = 0.0f;
    dotSum = 0.0f;
    int64_t const vectors = length / V;
    for (int64_t v = lane; v < vectors; v += kWarpSize)
    {
        Storage ra[V];
        loadVector<Storage, V>(a + v * V, ra);
        if (b != nullptr)
        {
            Storage rb[V];
            loadVector<Storage, V>(b + v * V, rb);
            for (int e = 0; e < V; ++e)
            {
                float const x = Traits::toFloat(ra[e]);
                squareSum = fmaf(x, x, squareSum);
                dotSum = fmaf(x, Traits::toFloat(rb[e]), dotSum);
            }
        }
        else
        {
            for (int e = 0; e < V; ++e)
            {
                float const x = Traits::toFloat(ra[e]);
                squareSum = fmaf(x, x, squareSum);
            }
        }
    }
}

// The warp butterfly (xor offsets 16, 8, 4, 2, 1) over 32 lane partials, run on the host in the order the
// device's __shfl_xor_sync rounds run: after it every lane holds the same, bitwise identical sum (float
// addition is commutative, so lane l and lane l ^ offset compute the same value).
inline float warpButterflySumHost(float (&lanes)[kWarpSize])
{
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    {
        float next[kWarpSize];
        for (int l = 0; l < kWarpSize; ++l)
        {
            next[l] = lanes[l] + lanes[l ^ offset];
        }
        for (int l = 0; l < kWarpSize; ++l)
        {
            lanes[l] = next[l];
        }
    }
    return lanes[0];
}

// cos(k_i, k_{i+1}) from <k_i, k_{i+1}>, |k_i|^2 and |k_{i+1}|^2 (each norm floored at kNormEps).
WM_HD float cosineFromParts(float dot, float squareA, float squareB)
{
    float normA = sqrtf(squareA);
    float normB = sqrtf(squareB);
    normA = normA > kNormEps ? normA : kNormEps;
    normB = normB > kNormEps ? normB : kNormEps;
    return dot / (normA * normB);
}

// ------------------------------------------------------------------------------------------ edge order

// Bits of a similarity that sort ascending in the order of descending similarity. NaN sorts first (PyTorch's
// descending sort ranks NaN above +inf) and -0 equals +0 (so the edge index alone breaks that tie).
WM_HD uint32_t descendingSimilarityBits(float s)
{
    uint32_t u = floatBits(s);
    if ((u & 0x7fffffffu) > 0x7f800000u)
    {
        return 0u;
    }
    if ((u & 0x7fffffffu) == 0u)
    {
        u = 0u;
    }
    uint32_t const ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~ascending;
}

// Smallest b >= 1 with 2^b >= edges: the width of the edge-index field of a composite key.
WM_HD int edgeIndexBits(int64_t edges)
{
    int b = 1;
    while (b < 32 && (int64_t{1} << b) < edges)
    {
        ++b;
    }
    return b;
}

// Composite sort key of edge i: similarity bits above the edge index. Keys are unique and an ascending sort
// lists edges by descending similarity with ties broken towards the lower index, so the first m keys are
// the picked edges. Only bits [0, 32 + indexBits) carry information.
WM_HD uint64_t compositeKey(float similarity, uint32_t edge, int indexBits)
{
    return (uint64_t(descendingSimilarityBits(similarity)) << indexBits) | uint64_t(edge);
}

WM_HD uint32_t compositeKeyEdge(uint64_t key, int indexBits)
{
    return uint32_t(key & ((uint64_t{1} << indexBits) - 1u));
}

// Padding key for unused sort slots: above every real key.
constexpr uint64_t kPaddingKey = ~uint64_t{0};

// ------------------------------------------------------------------------------------------ groups

// Token j starts a group unless edge j - 1 (joining tokens j - 1 and j) was picked.
WM_HD bool startsGroup(int64_t j, uint8_t const* pickedEdges)
{
    return j == 0 || pickedEdges[j - 1] == 0;
}

// One member of a group mean: acc += w * x (fused); the weight sum adds w in member order.
WM_HD void accumulateMember(float weight, float value, float& acc)
{
    acc = fmaf(weight, value, acc);
}

WM_HD void accumulateWeight(float weight, float& weightSum)
{
    weightSum += weight;
}

WM_HD float weightedMean(float acc, float weightSum)
{
    return acc / (weightSum > kTinyWeight ? weightSum : kTinyWeight);
}

} // namespace wm
} // namespace fastadasp

#endif // FASTADASP_WEIGHTED_MERGE_MATH_H
