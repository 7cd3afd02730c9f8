// Engine selection: which entry of manifest.engines this process can run.
//
// Entries are keyed "<flavor>-<version>/<target>" (engines/pipeline.py). A TensorRT engine runs only under the
// TensorRT version that built it and on GPUs of the compute capability it was built for; TensorRT-RTX engines
// need TensorRT-RTX's own runtime, which this library is not built against. A mismatch is one message that lists
// what the directory holds, why each entry does not fit, and the export-engine command that builds the missing
// engines.
#pragma once

#include "manifest.h"

#include <string>
#include <vector>

namespace fastadasp
{

// The GPU and toolkit a choice is made for. Empty fields are unknown (e.g. a dry run on a machine without a GPU).
struct Platform
{
    std::string flavor = "tensorrt";
    std::string toolkitVersion;    // "10.14.1"
    std::string computeCapability; // "9.0"
    std::string device;            // GPU name, for messages
    std::string source = "unknown"; // "detected" | "assumed" | "unknown"

    bool known() const
    {
        return !toolkitVersion.empty() && !computeCapability.empty();
    }
    std::string describe() const;
};

struct EntryVerdict
{
    EngineEntry const* entry = nullptr;
    std::string computeCapability; // parsed from the entry's target; "" when it names none
    bool usable = false;
    std::string why; // "matches", or why it cannot run here
};

struct EngineChoice
{
    EngineEntry const* entry = nullptr; // nullptr: none chosen
    bool checked = false;               // the entry was checked against a known platform
    std::string reason;                 // why this entry, or why none (one line)
    std::vector<EntryVerdict> entries;  // every entry of the manifest with its verdict
    std::string buildCommand;           // export-engine command for this platform's engines
};

// "8.6", "86", "sm86", "SM_86", "sm_90a" -> "8.6" / "9.0"; "" when it is not a compute capability.
std::string normalizeComputeCapability(std::string const& text);

// The compute capability an entry was built for: its target when that is one ("8.6"), else the "smX.Y" inside
// TensorRT's build-device name ("NVIDIA H100 80GB HBM3 sm9.0"); "" for "portable" or an unknown device.
std::string entryComputeCapability(EngineEntry const& entry);

// TensorRT engines are tied to major.minor.patch; the build number ("10.14.1.48") is ignored.
bool toolkitVersionsMatch(std::string const& entryVersion, std::string const& runtimeVersion);

// The export-engine command that rebuilds this export with engines for `computeCapability` ("" -> a placeholder).
std::string buildEngineCommand(Manifest const& manifest, std::string const& computeCapability);

// Never throws: the reason says why nothing was chosen.
EngineChoice chooseEngine(Manifest const& manifest, Platform const& platform, std::string const& requestedKey = "");

// chooseEngine, then Error(kNoEngine, reason) when nothing fits.
EngineEntry const& selectEngine(Manifest const& manifest, Platform const& platform, std::string const& requestedKey = "");

} // namespace fastadasp
