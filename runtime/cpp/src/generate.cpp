#include "generate.h"

#include "errors.h"
#include "length_rule.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <queue>

namespace fastadasp
{
namespace
{

constexpr float kNeg = -1.0e9f; // the "impossible" score Hugging Face uses for masked beams (runtime/generate.py)

using Clock = std::chrono::steady_clock;

double millisecondsSince(Clock::time_point start)
{
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool contains(std::vector<int64_t> const& values, int64_t v)
{
    return std::find(values.begin(), values.end(), v) != values.end();
}

struct Scored
{
    float score;
    int64_t index;
};

// torch.topk(sorted=True) order: highest score first; exact ties go to the lower index so the result never
// depends on the sort's internals.
bool ranksBefore(Scored const& a, Scored const& b)
{
    return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// The k best of `scores` (k <= size), best first. A bounded heap: O(n log k), no copy of a K x V row.
std::vector<Scored> topK(float const* scores, int64_t n, int64_t k)
{
    auto worstOnTop = [](Scored const& a, Scored const& b) { return ranksBefore(a, b); };
    std::priority_queue<Scored, std::vector<Scored>, decltype(worstOnTop)> heap(worstOnTop);
    for (int64_t i = 0; i < n; ++i)
    {
        Scored s{scores[i], i};
        if (static_cast<int64_t>(heap.size()) < k)
        {
            heap.push(s);
        }
        else if (ranksBefore(s, heap.top()))
        {
            heap.pop();
            heap.push(s);
        }
    }
    std::vector<Scored> out;
    while (!heap.empty())
    {
        out.push_back(heap.top());
        heap.pop();
    }
    std::reverse(out.begin(), out.end());
    return out;
}

// log_softmax of one row in float32 (max-shifted, like torch.log_softmax on the CPU).
void logSoftmax(float const* logits, int64_t vocab, float* out)
{
    float maximum = logits[0];
    for (int64_t v = 1; v < vocab; ++v)
    {
        maximum = std::max(maximum, logits[v]);
    }
    float sum = 0.0f;
    for (int64_t v = 0; v < vocab; ++v)
    {
        sum += std::exp(logits[v] - maximum);
    }
    float logSum = std::log(sum);
    for (int64_t v = 0; v < vocab; ++v)
    {
        out[v] = logits[v] - maximum - logSum;
    }
}

class Stepper
{
public:
    Stepper(Executor& executor, KvPlan const& plan, PrefillBatch const& batch)
        : mExecutor(executor)
        , mKv(plan)
        , mBatch(batch)
    {
    }

    // Feeds token `step` (0-based) of every row; returns the next logits.
    void decode(std::vector<int64_t> const& tokens, int64_t step, std::vector<float>& logits, GenerationResult& result)
    {
        mKv.checkRoom(1);
        // Generated token `step` sits right after the *full* prompt, whatever the merges did.
        std::vector<int64_t> positions(
            tokens.size(), decodePosition(mBatch.prefixTokens, mBatch.audioTokens, mBatch.suffixTokens, step));
        auto start = Clock::now();
        mExecutor.decode(tokens, positions, mKv.lengths(), logits);
        result.decodeMs += millisecondsSince(start);
        ++result.decodeSteps;
        mKv.advance(1);
    }

private:
    Executor& mExecutor;
    KvLengths mKv;
    PrefillBatch const& mBatch;
};

GenerationResult greedy(Executor& executor, KvPlan const& plan, int64_t vocab, PrefillBatch const& batch,
    GenerationConfig const& config)
{
    GenerationResult result;
    std::vector<float> logits;
    auto start = Clock::now();
    executor.prefill(batch, plan, logits);
    result.prefillMs = millisecondsSince(start);
    Stepper stepper(executor, plan, batch);

    int64_t rows = batch.batch;
    std::vector<int64_t> const& eos = config.eosTokenIds;
    int64_t pad = config.hasPadTokenId ? config.padTokenId : (eos.empty() ? 0 : eos[0]);
    std::vector<bool> unfinished(static_cast<std::size_t>(rows), true);
    std::vector<std::vector<int64_t>> steps;
    for (int64_t step = 0; step < config.maxNewTokens; ++step)
    {
        std::vector<int64_t> next(static_cast<std::size_t>(rows));
        bool anyUnfinished = false;
        for (int64_t r = 0; r < rows; ++r)
        {
            float const* row = logits.data() + r * vocab;
            next[r] = std::max_element(row, row + vocab) - row; // the first maximum, like torch.argmax
            if (!eos.empty())
            {
                if (!unfinished[r])
                {
                    next[r] = pad;
                }
                unfinished[r] = unfinished[r] && !contains(eos, next[r]);
            }
            anyUnfinished = anyUnfinished || unfinished[r];
        }
        steps.push_back(next);
        if (!anyUnfinished || step + 1 == config.maxNewTokens)
        {
            break;
        }
        stepper.decode(next, step, logits, result);
    }
    result.rows = rows;
    result.length = static_cast<int64_t>(steps.size());
    result.tokens.resize(static_cast<std::size_t>(rows * result.length));
    for (int64_t t = 0; t < result.length; ++t)
    {
        for (int64_t r = 0; r < rows; ++r)
        {
            result.tokens[r * result.length + t] = steps[t][r];
        }
    }
    return result;
}

// One hypothesis: its tokens and, per step, the flat row (b * K + beam) it came from (-1 before it started).
struct Hypothesis
{
    std::vector<int64_t> tokens;
    std::vector<int64_t> origin;
};

GenerationResult beamSearch(Executor& executor, KvPlan const& plan, int64_t vocab, PrefillBatch const& batch,
    GenerationConfig const& config)
{
    int64_t const K = config.numBeams;
    int64_t const maxNew = config.maxNewTokens;
    double const lp = config.lengthPenalty;
    int64_t const B = batch.batch;
    std::vector<int64_t> const& eos = config.eosTokenIds;

    GenerationResult result;
    std::vector<float> prefillLogits;
    auto start = Clock::now();
    executor.prefill(batch, plan, prefillLogits);
    result.prefillMs = millisecondsSince(start);
    Stepper stepper(executor, plan, batch);

    // Prefill once per sample, then every sample becomes K identical rows.
    std::vector<int32_t> expansion;
    for (int64_t b = 0; b < B; ++b)
    {
        expansion.insert(expansion.end(), static_cast<std::size_t>(K), static_cast<int32_t>(b));
    }
    executor.reorder(expansion);
    std::vector<float> logits(static_cast<std::size_t>(B * K * vocab));
    for (int64_t r = 0; r < B * K; ++r)
    {
        std::copy_n(prefillLogits.data() + (r / K) * vocab, vocab, logits.data() + r * vocab);
    }

    int64_t const fill = config.hasPadTokenId ? config.padTokenId : (eos.empty() ? -1 : eos[0]);
    // Candidates kept per step so that K live beams survive K EOS hits.
    int64_t const keep = std::max<int64_t>(2, 1 + static_cast<int64_t>(eos.size())) * K;
    if (keep > K * vocab)
    {
        throw Error(Status::kInvalidArgument,
            "num_beams " + std::to_string(K) + " needs at least " + std::to_string(keep)
                + " candidates per step, more than beams x vocabulary");
    }

    Hypothesis const empty{std::vector<int64_t>(maxNew, fill), std::vector<int64_t>(maxNew, -1)};
    std::vector<std::vector<Hypothesis>> running(B, std::vector<Hypothesis>(K, empty));
    std::vector<std::vector<float>> runningScores(B, std::vector<float>(K, kNeg));
    std::vector<std::vector<Hypothesis>> done(B, std::vector<Hypothesis>(K, empty));
    std::vector<std::vector<float>> doneScores(B, std::vector<float>(K, kNeg));
    std::vector<std::vector<bool>> doneFlag(B, std::vector<bool>(K, false));
    std::vector<bool> canImprove(B, true);
    for (int64_t b = 0; b < B; ++b)
    {
        runningScores[b][0] = 0.0f; // only the first beam is live at the start: the others are copies
    }

    std::vector<float> logProbs(static_cast<std::size_t>(K * vocab));
    for (int64_t step = 0; step < maxNew; ++step)
    {
        bool allHits = true;
        float const lengthScale = static_cast<float>(std::pow(static_cast<double>(step + 1), lp));
        int64_t hypotheticalLength = (config.earlyStopping == EarlyStopping::kNever && lp > 0.0) ? maxNew : step + 1;
        float const runningScale = static_cast<float>(std::pow(static_cast<double>(hypotheticalLength), lp));
        for (int64_t b = 0; b < B; ++b)
        {
            for (int64_t k = 0; k < K; ++k)
            {
                float* row = logProbs.data() + k * vocab;
                logSoftmax(logits.data() + (b * K + k) * vocab, vocab, row);
                for (int64_t v = 0; v < vocab; ++v)
                {
                    row[v] += runningScores[b][k];
                }
            }
            std::vector<Scored> cands = topK(logProbs.data(), K * vocab, keep);
            std::vector<Hypothesis> candHyp(static_cast<std::size_t>(keep));
            std::vector<bool> hits(static_cast<std::size_t>(keep));
            std::vector<float> liveScores(static_cast<std::size_t>(keep));
            for (int64_t j = 0; j < keep; ++j)
            {
                int64_t beam = cands[j].index / vocab;
                int64_t token = cands[j].index % vocab;
                candHyp[j] = running[b][beam];
                candHyp[j].tokens[step] = token;
                candHyp[j].origin[step] = beam + b * K;
                hits[j] = contains(eos, token) || step + 1 >= maxNew;
                allHits = allHits && hits[j];
                liveScores[j] = cands[j].score + (hits[j] ? kNeg : 0.0f);
            }

            // Live beams for the next step: the best K candidates that did not just stop.
            std::vector<Scored> live = topK(liveScores.data(), keep, K);
            for (int64_t k = 0; k < K; ++k)
            {
                running[b][k] = candHyp[live[k].index];
                runningScores[b][k] = live[k].score;
            }

            // Finished hypotheses: only candidates among the top K may finish; keep the best K overall.
            bool allDone = std::all_of(doneFlag[b].begin(), doneFlag[b].end(), [](bool f) { return f; });
            std::vector<float> allScores(doneScores[b]);
            for (int64_t j = 0; j < keep; ++j)
            {
                bool justDone = hits[j] && j < K;
                float final = cands[j].score / lengthScale;
                if (config.earlyStopping == EarlyStopping::kTrue)
                {
                    final = final + (allDone ? kNeg : 0.0f);
                }
                final = final + (canImprove[b] ? 0.0f : kNeg);
                final = final + (justDone ? 0.0f : kNeg);
                allScores.push_back(final);
            }
            std::vector<Scored> best = topK(allScores.data(), K + keep, K);
            std::vector<Hypothesis> nextDone(static_cast<std::size_t>(K));
            std::vector<float> nextScores(static_cast<std::size_t>(K));
            std::vector<bool> nextFlag(static_cast<std::size_t>(K));
            for (int64_t k = 0; k < K; ++k)
            {
                int64_t i = best[k].index;
                nextDone[k] = i < K ? done[b][i] : candHyp[i - K];
                nextScores[k] = best[k].score;
                nextFlag[k] = i < K ? doneFlag[b][i] : (hits[i - K] && i - K < K);
            }
            done[b].swap(nextDone);
            doneScores[b].swap(nextScores);
            doneFlag[b].swap(nextFlag);

            // Could a live beam still beat the worst finished one? (HF's default heuristic.)
            float bestRunning = runningScores[b][0] / runningScale;
            float worst = *std::min_element(doneScores[b].begin(), doneScores[b].end());
            bool improvable = false;
            for (int64_t k = 0; k < K; ++k)
            {
                improvable = improvable || bestRunning > (doneFlag[b][k] ? worst : kNeg);
            }
            canImprove[b] = canImprove[b] && improvable;
        }

        bool anyImprovable = std::any_of(canImprove.begin(), canImprove.end(), [](bool c) { return c; });
        bool everyDone = true;
        for (auto const& flags : doneFlag)
        {
            everyDone = everyDone && std::all_of(flags.begin(), flags.end(), [](bool f) { return f; });
        }
        bool openBeams = !(everyDone && config.earlyStopping == EarlyStopping::kTrue);
        if (!(anyImprovable && openBeams && !allHits))
        {
            break;
        }
        std::vector<int32_t> origin;
        std::vector<int64_t> tokens;
        for (int64_t b = 0; b < B; ++b)
        {
            for (int64_t k = 0; k < K; ++k)
            {
                origin.push_back(static_cast<int32_t>(running[b][k].origin[step]));
                tokens.push_back(running[b][k].tokens[step]);
            }
        }
        executor.reorder(origin);
        stepper.decode(tokens, step, logits, result);
    }

    // Every row returns its best finished hypothesis, cut to the longest one in the batch.
    int64_t generated = 0;
    for (int64_t b = 0; b < B; ++b)
    {
        auto const& origin = done[b][0].origin;
        generated = std::max<int64_t>(generated, std::count_if(origin.begin(), origin.end(), [](int64_t o) { return o >= 0; }));
    }
    result.rows = B;
    result.length = generated;
    for (int64_t b = 0; b < B; ++b)
    {
        result.tokens.insert(result.tokens.end(), done[b][0].tokens.begin(), done[b][0].tokens.begin() + generated);
        result.scores.push_back(doneScores[b][0]);
    }
    return result;
}

} // namespace

void GenerationConfig::validate() const
{
    if (maxNewTokens < 1)
    {
        throw Error(Status::kInvalidArgument, "max_new_tokens must be >= 1, got " + std::to_string(maxNewTokens));
    }
    if (numBeams < 1)
    {
        throw Error(Status::kInvalidArgument, "num_beams must be >= 1, got " + std::to_string(numBeams));
    }
}

KvLengths::KvLengths(KvPlan const& plan)
    : mLengths(plan.prefillLengths())
    , mCapacities(plan.capacities())
{
}

void KvLengths::checkRoom(int64_t steps) const
{
    for (std::size_t i = 0; i < mLengths.size(); ++i)
    {
        if (mLengths[i] + steps > mCapacities[i])
        {
            throw Error(Status::kLimits,
                "layer " + std::to_string(i) + "'s KV cache is full (" + std::to_string(mLengths[i]) + " of "
                    + std::to_string(mCapacities[i])
                    + " entries): the cache was sized for fewer new tokens; raise max_new_tokens when starting the request");
        }
    }
}

void KvLengths::advance(int64_t steps)
{
    checkRoom(steps);
    for (auto& length : mLengths)
    {
        length += steps;
    }
}

GenerationResult generate(
    Executor& executor, KvPlan const& plan, int64_t vocabSize, PrefillBatch const& batch, GenerationConfig const& config)
{
    config.validate();
    if (batch.batch * config.numBeams != plan.rows || config.maxNewTokens > plan.request.maxNewTokens)
    {
        throw Error(Status::kInternal, "the KV plan was made for another request shape (rows or max_new_tokens)");
    }
    GenerationResult result = config.numBeams == 1 ? greedy(executor, plan, vocabSize, batch, config)
                                                   : beamSearch(executor, plan, vocabSize, batch, config);
    executor.release();
    return result;
}

} // namespace fastadasp
