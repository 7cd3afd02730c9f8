// The length rule (docs/architecture.md, "The length rule"): every per-layer length follows from the audio
// length N and the fixed-point schedule alone, with the same integer formula Python
// (fastadasp/reduction/merge.py: num_merged, fastadasp/reduction/schedule.py: span_lengths_for_ratios), the ONNX
// shape arithmetic and the plugin use. Integers only: a float ratio floors differently in fp32 and fp64.
#pragma once

#include <cstdint>
#include <vector>

namespace fastadasp
{

// m = min(n * q // denominator, max(n - 1, 0)): edges merged at a layer holding n audio tokens.
int64_t numMerged(int64_t n, int64_t q, int64_t denominator);

// n[0] = N, n[i+1] = n[i] - numMerged(n[i], q[i]): audio tokens entering each layer, plus the count after
// the last one (size L + 1).
std::vector<int64_t> spanLengths(std::vector<int64_t> const& q, int64_t denominator, int64_t audioTokens);

// T[i] = P + n[i] + S: layer i's KV length after prefill (layer i's merge runs after its attention).
std::vector<int64_t> prefillKvLengths(
    std::vector<int64_t> const& q, int64_t denominator, int64_t prefixTokens, int64_t audioTokens, int64_t suffixTokens);

// Position of generated token `step` (0-based): the full prompt length P + N + S, whatever was merged.
inline int64_t decodePosition(int64_t prefixTokens, int64_t audioTokens, int64_t suffixTokens, int64_t step)
{
    return prefixTokens + audioTokens + suffixTokens + step;
}

} // namespace fastadasp
