// The KV planner: for one request, each layer's audio tokens, prefill KV length, capacity and bytes.
//
// After a FastAdaSP prefill every layer holds a different number of tokens, so each layer gets its own buffer
// [rows, Hkv, C_i, d] with C_i = T_i + max_new_tokens (the same sizing as runtime/kv_cache.py). Requests are
// checked against the export's serving limits (manifest.limits) and, once an engine is chosen, against the
// engine's optimization profiles, before any memory is touched.
#pragma once

#include "manifest.h"

#include <cstdint>
#include <vector>

namespace fastadasp
{

struct RequestShape
{
    int64_t batch = 1;
    int64_t numBeams = 1;
    int64_t prefixTokens = 0; // P
    int64_t audioTokens = 1;  // N
    int64_t suffixTokens = 0; // S
    int64_t maxNewTokens = 1; // T

    int64_t rows() const
    {
        return batch * numBeams;
    }
    int64_t promptTokens() const
    {
        return prefixTokens + audioTokens + suffixTokens;
    }
};

// What the planner needs from a manifest; tests build one directly.
struct ModelGeometry
{
    std::vector<int64_t> ratioNumerators;
    int64_t ratioDenominator = 65536;
    int64_t numKvHeads = 1;
    int64_t headDim = 1;
    int64_t hiddenSize = 1;
    int64_t vocabSize = 1;
    int64_t kvElementBytes = 4;

    static ModelGeometry fromManifest(Manifest const& manifest);
    int64_t numLayers() const
    {
        return static_cast<int64_t>(ratioNumerators.size());
    }
};

struct LayerPlan
{
    int64_t layer = 0;
    int64_t ratioNumerator = 0;
    int64_t audioTokens = 0;   // n[i]: audio tokens in this layer's KV
    int64_t merged = 0;        // m[i]: merged away by this layer (seen by the layers above)
    int64_t prefillLength = 0; // T[i] = P + n[i] + S
    int64_t capacity = 0;      // C[i] = T[i] + max_new_tokens
    int64_t kvBytes = 0;       // key + value buffers: 2 * rows * Hkv * C[i] * d * element bytes
};

struct KvPlan
{
    RequestShape request;
    int64_t rows = 0; // batch x beams: rows of every KV buffer
    std::vector<LayerPlan> layers;
    int64_t audioTokensAfterLastLayer = 0;
    int64_t firstDecodePosition = 0; // P + N + S
    int64_t kvBytes = 0;             // all layers
    int64_t reorderBytes = 0;        // the second KV set for beam reorder / ping-pong decode (0 when not needed)
    int64_t numKvHeads = 0;
    int64_t headDim = 0;
    int64_t elementBytes = 0;

    std::vector<int64_t> prefillLengths() const;
    std::vector<int64_t> capacities() const;
};

// Whether an executor keeps a second KV set: beams reorder by gathering into it, and a decode that does not
// write in place writes into it.
inline bool needsSecondKvSet(int64_t numBeams, bool kvInPlace)
{
    return numBeams > 1 || !kvInPlace;
}

KvPlan planKv(ModelGeometry const& geometry, RequestShape const& request, bool secondKvSet);

// The request against the export's limits; Error(kInvalidArgument / kLimits) naming the value and the fix.
void checkRequest(Manifest const& manifest, RequestShape const& request);

// The request's shapes against an engine entry's optimization profiles; Error(kLimits) naming the input.
void checkEngineProfiles(Manifest const& manifest, EngineEntry const& entry, KvPlan const& plan);

} // namespace fastadasp
