// Tensor names of the exported graphs and the engines built from them (exporter/graphs.py writes them; the
// manifest records them under graphs.<role>.inputs / outputs). One place for the names, and a check that an
// export carries every tensor this runtime binds.
#pragma once

#include "manifest.h"

#include <string>
#include <vector>

namespace fastadasp
{
namespace bindings
{

// prefill: prefix_ids [B,P] int64, audio_embeds [B,N,D], suffix_ids [B,S] int64, (lora_scale [B,D])
//   -> logits [B,V], present.{i}.key / present.{i}.value [B,Hkv,T_i,d]
constexpr char const* kPrefixIds = "prefix_ids";
constexpr char const* kAudioEmbeds = "audio_embeds";
constexpr char const* kSuffixIds = "suffix_ids";
constexpr char const* kLoraScale = "lora_scale";
constexpr char const* kLogits = "logits";
// decode: input_ids [B,1], position_ids [B,1] int64, cache_lengths [L] int64, past.{i}.key/value [B,Hkv,C_i,d],
//   (lora_scale) -> logits, present.{i}.key/value [B,Hkv,C_i,d] (bound to the past buffer: written in place)
constexpr char const* kInputIds = "input_ids";
constexpr char const* kPositionIds = "position_ids";
constexpr char const* kCacheLengths = "cache_lengths";

std::string pastKey(int64_t layer);
std::string pastValue(int64_t layer);
std::string presentKey(int64_t layer);
std::string presentValue(int64_t layer);

std::vector<std::string> prefillInputs(int64_t numLayers, bool promptLora);
std::vector<std::string> prefillOutputs(int64_t numLayers);
std::vector<std::string> decodeInputs(int64_t numLayers, bool promptLora);
std::vector<std::string> decodeOutputs(int64_t numLayers);

// Every name above is in the manifest's graphs, the KV tensors are [batch, Hkv, len, d] with the model's Hkv and
// d, and cache_lengths has one entry per layer. Error(kManifest) naming the first missing or mismatched tensor.
void checkGraphBindings(Manifest const& manifest);

} // namespace bindings
} // namespace fastadasp
