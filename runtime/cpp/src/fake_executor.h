// A deterministic stand-in for the engines: logits are a hash of everything the real engines would see (prompt
// ids, N, each layer's prefill KV length, the fed token, its position, the cache lengths), so a wrong position,
// a wrong cache length, a missed reorder or a write past a layer's capacity changes the tokens or throws.
// runtime/cpp/tests/golden/make_golden.py implements the same function as a Python backend, so beam search here
// is compared with fastadasp.runtime.generate on identical logits.
#pragma once

#include "executor.h"

#include <cstdint>
#include <vector>

namespace fastadasp
{

uint64_t splitmix64(uint64_t x);

class FakeExecutor final : public Executor
{
public:
    explicit FakeExecutor(int64_t vocabSize, uint64_t seed = 0);

    char const* name() const noexcept override
    {
        return "fake";
    }
    void prefill(PrefillBatch const& batch, KvPlan const& plan, std::vector<float>& logits) override;
    void decode(std::vector<int64_t> const& inputIds, std::vector<int64_t> const& positionIds,
        std::vector<int64_t> const& cacheLengths, std::vector<float>& logits) override;
    void reorder(std::vector<int32_t> const& index) override;
    void release() noexcept override;

    // logits[v] of a row in state `state`: exact multiples of 2^-20 in [-8, 8), so float32 holds them exactly.
    static float logit(uint64_t state, int64_t token);

    int64_t rows() const
    {
        return static_cast<int64_t>(mStates.size());
    }
    int64_t decodeCalls() const
    {
        return mDecodeCalls;
    }
    int64_t reorderCalls() const
    {
        return mReorderCalls;
    }

private:
    void fillLogits(std::vector<float>& logits) const;

    int64_t mVocab;
    uint64_t mSeed;
    std::vector<uint64_t> mStates;     // one per row
    std::vector<int64_t> mCapacities;  // per layer, from the plan
    int64_t mPlanRows = 0;
    int64_t mDecodeCalls = 0;
    int64_t mReorderCalls = 0;
};

} // namespace fastadasp
