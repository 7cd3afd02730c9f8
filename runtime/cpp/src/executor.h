// The executor interface: what runs the prefill and decode engines. The generation loop (generate.h) and the KV
// bookkeeping never see TensorRT, so they are plain C++ tested with a fake executor; only
// tensorrt/trt_executor.cpp touches TensorRT and CUDA. The same split as the Python backends
// (runtime/backends/base.py: prefill, decode, reorder, expand).
#pragma once

#include "kv_plan.h"

#include <cstdint>
#include <vector>

namespace fastadasp
{

// One request's prompt, on the host. Row-major; audio_embeds and lora_scale are float32 whatever the engine's
// precision (the executor converts).
struct PrefillBatch
{
    int64_t batch = 1;
    int64_t prefixTokens = 0;
    int64_t audioTokens = 0;
    int64_t suffixTokens = 0;
    int64_t hiddenSize = 0;
    int64_t const* prefixIds = nullptr; // [batch, P]
    float const* audioEmbeds = nullptr; // [batch, N, D]
    int64_t const* suffixIds = nullptr; // [batch, S]
    float const* loraScale = nullptr;   // [batch, D] when the export has prompt_lora, else nullptr
};

class Executor
{
public:
    virtual ~Executor() = default;

    virtual char const* name() const noexcept = 0;

    // Sizes every layer's KV buffer for `plan` (plan.rows rows, capacity C_i), runs prefill for batch.batch rows,
    // stores present.{i}.* at the start of each layer's buffer and returns logits [batch, V] (float32, host).
    virtual void prefill(PrefillBatch const& batch, KvPlan const& plan, std::vector<float>& logits) = 0;

    // One step for inputIds.size() rows: input_ids / position_ids [rows], cacheLengths [L] (entries already valid
    // per layer; this step writes at that index). Returns logits [rows, V].
    virtual void decode(std::vector<int64_t> const& inputIds, std::vector<int64_t> const& positionIds,
        std::vector<int64_t> const& cacheLengths, std::vector<float>& logits)
        = 0;

    // Row r of every per-request state (KV of every layer, lora_scale) becomes old row index[r]; index.size() is
    // the new row count (beam expansion and beam reorder).
    virtual void reorder(std::vector<int32_t> const& index) = 0;

    // Drops per-request state; buffers may be kept for the next request.
    virtual void release() noexcept {}
};

} // namespace fastadasp
