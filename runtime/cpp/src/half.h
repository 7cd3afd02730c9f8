// float32 <-> float16 / bfloat16 on the host, for request inputs (audio_embeds, lora_scale) going into fp16 / bf16
// engines and logits coming back. Round to nearest even, like the device conversions.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastadasp
{

inline uint32_t floatBits(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u;
}

inline float bitsFloat(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
}

inline uint16_t floatToBfloat16(float f)
{
    uint32_t u = floatBits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: keep it a NaN
    {
        return static_cast<uint16_t>((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

inline float bfloat16ToFloat(uint16_t h)
{
    return bitsFloat(static_cast<uint32_t>(h) << 16);
}

inline uint16_t floatToHalf(float f)
{
    uint32_t u = floatBits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | 0x7e00u); // NaN
    }
    if (absu >= 0x477ff000u) // rounds to >= 65520: infinity
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (absu < 0x38800000u) // below the smallest normal half: subnormal or zero
    {
        // Adding 0.5 makes the float unit do the round-to-nearest-even at the subnormal step.
        float magnitude = bitsFloat(absu) + 0.5f;
        return static_cast<uint16_t>(sign | (floatBits(magnitude) - 0x3f000000u));
    }
    uint32_t mantissaOdd = (absu >> 13) & 1u;
    absu += 0xc8000fffu + mantissaOdd; // rebias exponent (-112 << 23) and round to nearest even
    return static_cast<uint16_t>(sign | (absu >> 13));
}

inline float halfToFloat(uint16_t h)
{
    uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f)
    {
        return bitsFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent == 0)
    {
        float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f); // mantissa * 2^-24
        return bitsFloat(sign | floatBits(magnitude));
    }
    return bitsFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

} // namespace fastadasp
