#include "length_rule.h"

#include <algorithm>

namespace fastadasp
{

int64_t numMerged(int64_t n, int64_t q, int64_t denominator)
{
    if (n <= 1 || q <= 0)
    {
        return 0;
    }
    // n < 2^40 and q < 2^16 in any real export, so n * q cannot overflow int64.
    return std::min(n * q / denominator, std::max<int64_t>(n - 1, 0));
}

std::vector<int64_t> spanLengths(std::vector<int64_t> const& q, int64_t denominator, int64_t audioTokens)
{
    std::vector<int64_t> n;
    n.reserve(q.size() + 1);
    n.push_back(audioTokens);
    for (int64_t numerator : q)
    {
        n.push_back(n.back() - numMerged(n.back(), numerator, denominator));
    }
    return n;
}

std::vector<int64_t> prefillKvLengths(
    std::vector<int64_t> const& q, int64_t denominator, int64_t prefixTokens, int64_t audioTokens, int64_t suffixTokens)
{
    std::vector<int64_t> n = spanLengths(q, denominator, audioTokens);
    std::vector<int64_t> t(q.size());
    for (std::size_t i = 0; i < q.size(); ++i)
    {
        t[i] = prefixTokens + n[i] + suffixTokens;
    }
    return t;
}

} // namespace fastadasp
