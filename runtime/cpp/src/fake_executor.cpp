#include "fake_executor.h"

#include "errors.h"

namespace fastadasp
{
namespace
{

[[noreturn]] void contract(std::string const& what)
{
    throw Error(Status::kInternal, "fake executor: " + what);
}

uint64_t fold(uint64_t h, int64_t value)
{
    return splitmix64(h ^ static_cast<uint64_t>(value));
}

} // namespace

uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

FakeExecutor::FakeExecutor(int64_t vocabSize, uint64_t seed)
    : mVocab(vocabSize)
    , mSeed(seed)
{
    if (vocabSize < 1)
    {
        contract("vocabulary size must be >= 1");
    }
}

float FakeExecutor::logit(uint64_t state, int64_t token)
{
    uint64_t bits = splitmix64(state ^ splitmix64(static_cast<uint64_t>(token)));
    return static_cast<float>(static_cast<double>(bits >> 40) / 1048576.0 - 8.0);
}

void FakeExecutor::fillLogits(std::vector<float>& logits) const
{
    logits.resize(mStates.size() * static_cast<std::size_t>(mVocab));
    for (std::size_t r = 0; r < mStates.size(); ++r)
    {
        for (int64_t v = 0; v < mVocab; ++v)
        {
            logits[r * mVocab + v] = logit(mStates[r], v);
        }
    }
}

void FakeExecutor::prefill(PrefillBatch const& batch, KvPlan const& plan, std::vector<float>& logits)
{
    if (batch.batch < 1 || batch.batch > plan.rows)
    {
        contract("prefill of " + std::to_string(batch.batch) + " rows into a plan of " + std::to_string(plan.rows));
    }
    if (batch.prefixTokens != plan.request.prefixTokens || batch.audioTokens != plan.request.audioTokens
        || batch.suffixTokens != plan.request.suffixTokens)
    {
        contract("prefill lengths differ from the plan's");
    }
    mPlanRows = plan.rows;
    mCapacities = plan.capacities();
    mStates.assign(static_cast<std::size_t>(batch.batch), 0);
    mDecodeCalls = 0;
    mReorderCalls = 0;
    std::vector<int64_t> lengths = plan.prefillLengths();
    for (int64_t b = 0; b < batch.batch; ++b)
    {
        uint64_t h = splitmix64(splitmix64(mSeed) ^ splitmix64(static_cast<uint64_t>(b + 1)));
        for (int64_t p = 0; p < batch.prefixTokens; ++p)
        {
            h = fold(h, batch.prefixIds[b * batch.prefixTokens + p]);
        }
        h = fold(h, batch.audioTokens);
        for (int64_t s = 0; s < batch.suffixTokens; ++s)
        {
            h = fold(h, batch.suffixIds[b * batch.suffixTokens + s]);
        }
        for (int64_t t : lengths) // the length rule's T_i, as the engine's present.{i} shapes would show them
        {
            h = fold(h, t);
        }
        h = fold(h, plan.audioTokensAfterLastLayer);
        mStates[static_cast<std::size_t>(b)] = h;
    }
    fillLogits(logits);
}

void FakeExecutor::decode(std::vector<int64_t> const& inputIds, std::vector<int64_t> const& positionIds,
    std::vector<int64_t> const& cacheLengths, std::vector<float>& logits)
{
    if (inputIds.size() != mStates.size() || positionIds.size() != mStates.size())
    {
        contract("decode with " + std::to_string(inputIds.size()) + " ids for " + std::to_string(mStates.size()) + " rows");
    }
    if (cacheLengths.size() != mCapacities.size())
    {
        contract("cache_lengths has " + std::to_string(cacheLengths.size()) + " entries for "
            + std::to_string(mCapacities.size()) + " layers");
    }
    for (std::size_t i = 0; i < cacheLengths.size(); ++i)
    {
        if (cacheLengths[i] < 0 || cacheLengths[i] >= mCapacities[i])
        {
            contract("layer " + std::to_string(i) + " write at " + std::to_string(cacheLengths[i]) + " past its capacity "
                + std::to_string(mCapacities[i]));
        }
    }
    for (std::size_t r = 0; r < mStates.size(); ++r)
    {
        uint64_t h = splitmix64(mStates[r] ^ splitmix64(static_cast<uint64_t>(inputIds[r])));
        h = fold(h, positionIds[r]);
        for (int64_t length : cacheLengths)
        {
            h = fold(h, length);
        }
        mStates[r] = h;
    }
    ++mDecodeCalls;
    fillLogits(logits);
}

void FakeExecutor::reorder(std::vector<int32_t> const& index)
{
    if (static_cast<int64_t>(index.size()) > mPlanRows)
    {
        contract("reorder to " + std::to_string(index.size()) + " rows, but the KV buffers hold " + std::to_string(mPlanRows));
    }
    std::vector<uint64_t> next(index.size());
    for (std::size_t r = 0; r < index.size(); ++r)
    {
        if (index[r] < 0 || static_cast<std::size_t>(index[r]) >= mStates.size())
        {
            contract("reorder index " + std::to_string(index[r]) + " outside " + std::to_string(mStates.size()) + " rows");
        }
        next[r] = mStates[static_cast<std::size_t>(index[r])];
    }
    mStates.swap(next);
    ++mReorderCalls;
}

void FakeExecutor::release() noexcept
{
    mStates.clear();
}

} // namespace fastadasp
