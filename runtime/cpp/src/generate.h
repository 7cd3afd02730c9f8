// Greedy and beam search over any executor, with the semantics of runtime/generate.py (itself Hugging Face
// `generate`, transformers 5.x): greedy takes the first maximum; beam search keeps the top 2K candidates by
// accumulated log-probability, scores finished hypotheses with a length penalty and stops with the same
// early-stopping heuristic. Prefill runs once per sample and the cache is expanded to K beams, so every beam holds
// the same merges. Scores are float32 like the Python loop, so both pick the same tokens on the same logits
// (checked against golden outputs of the Python loop in runtime/cpp/tests/golden/).
#pragma once

#include "executor.h"
#include "kv_plan.h"

#include <cstdint>
#include <vector>

namespace fastadasp
{

enum class EarlyStopping : int
{
    kFalse = 0, // HF's default heuristic
    kTrue = 1,  // stop a sample once K hypotheses are finished
    kNever = 2, // the canonical beam-search stopping rule
};

struct GenerationConfig
{
    int64_t maxNewTokens = 32;
    int64_t numBeams = 1;
    std::vector<int64_t> eosTokenIds;
    bool hasPadTokenId = false;
    int64_t padTokenId = 0;
    double lengthPenalty = 1.0;
    EarlyStopping earlyStopping = EarlyStopping::kFalse;

    void validate() const; // Error(kInvalidArgument)
};

struct GenerationResult
{
    int64_t rows = 0;   // batch
    int64_t length = 0; // tokens per row
    std::vector<int64_t> tokens; // [rows, length]: generated tokens only, padded after a row ends
    std::vector<float> scores;   // beam search: the returned hypothesis' score per row; empty for greedy
    int64_t decodeSteps = 0;
    double prefillMs = 0.0;
    double decodeMs = 0.0;
};

// Per-layer valid lengths against capacities (the host mirror of the device KV buffers): decode writes at
// lengths[i] and grows it by one (runtime/kv_cache.py: CompactedKVCache.advance).
class KvLengths
{
public:
    explicit KvLengths(KvPlan const& plan);
    std::vector<int64_t> const& lengths() const
    {
        return mLengths;
    }
    void checkRoom(int64_t steps = 1) const; // Error(kLimits) naming the layer
    void advance(int64_t steps = 1);

private:
    std::vector<int64_t> mLengths;
    std::vector<int64_t> mCapacities;
};

// Runs prefill then decode steps on `executor`. `plan` must come from planKv for this request (its rows are
// batch x numBeams, its capacities T_i + maxNewTokens).
GenerationResult generate(
    Executor& executor, KvPlan const& plan, int64_t vocabSize, PrefillBatch const& batch, GenerationConfig const& config);

} // namespace fastadasp
