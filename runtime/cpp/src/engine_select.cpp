#include "engine_select.h"

#include "errors.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace fastadasp
{
namespace
{

std::vector<long> versionParts(std::string const& version)
{
    std::vector<long> parts;
    std::size_t i = 0;
    while (i < version.size() && parts.size() < 3)
    {
        if (!std::isdigit(static_cast<unsigned char>(version[i])))
        {
            break;
        }
        char* end = nullptr;
        parts.push_back(std::strtol(version.c_str() + i, &end, 10));
        i = static_cast<std::size_t>(end - version.c_str());
        if (i < version.size() && version[i] == '.')
        {
            ++i;
        }
        else
        {
            break;
        }
    }
    return parts;
}

// Python's repr of a float (the shortest text that reads back the same), so commands show "0.3", not 0.2999...
std::string shortestDouble(double value)
{
    char text[64];
    for (int precision = 1; precision <= 17; ++precision)
    {
        std::snprintf(text, sizeof(text), "%.*g", precision, value);
        if (std::strtod(text, nullptr) == value)
        {
            break;
        }
    }
    return text;
}

std::string shellQuote(std::string const& text)
{
    bool plain = !text.empty();
    for (char c : text)
    {
        plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::string("/._-+:=,@").find(c) != std::string::npos);
    }
    if (plain)
    {
        return text;
    }
    std::string out = "'";
    for (char c : text)
    {
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return out + "'";
}

EntryVerdict judge(EngineEntry const& entry, Platform const& platform)
{
    EntryVerdict v;
    v.entry = &entry;
    v.computeCapability = entryComputeCapability(entry);
    if (entry.flavor != platform.flavor)
    {
        v.why = entry.flavor == "tensorrt-rtx"
            ? "a TensorRT-RTX engine; this runtime is built against TensorRT 10 and runs TensorRT engines only"
            : "a " + entry.flavor + " engine; this runtime runs " + platform.flavor + " engines only";
        return v;
    }
    for (char const* role : {"prefill", "decode"})
    {
        if (!entry.graphs.count(role))
        {
            v.why = std::string("has no ") + role + " engine";
            return v;
        }
    }
    if (!platform.toolkitVersion.empty() && !toolkitVersionsMatch(entry.toolkitVersion, platform.toolkitVersion))
    {
        v.why = "built with TensorRT " + entry.toolkitVersion + ", this runtime has TensorRT " + platform.toolkitVersion;
        return v;
    }
    if (!platform.computeCapability.empty())
    {
        if (v.computeCapability.empty())
        {
            v.why = "built for target '" + entry.computeCapability + "', which names no compute capability";
            return v;
        }
        if (v.computeCapability != platform.computeCapability)
        {
            v.why = "built for compute capability " + v.computeCapability + ", this GPU is "
                + platform.computeCapability;
            return v;
        }
    }
    v.usable = true;
    v.why = platform.known() ? "matches" : "not checked against a GPU";
    return v;
}

std::string listEntries(std::vector<EntryVerdict> const& verdicts)
{
    std::string out;
    for (auto const& v : verdicts)
    {
        out += (out.empty() ? "" : "; ") + v.entry->key + " (" + v.why + ")";
    }
    return out;
}

} // namespace

std::string Platform::describe() const
{
    std::string text = "TensorRT " + (toolkitVersion.empty() ? std::string("(version unknown)") : toolkitVersion);
    text += computeCapability.empty() ? std::string(" on an unknown GPU") : " on compute capability " + computeCapability;
    if (!device.empty())
    {
        text += " (" + device + ")";
    }
    return text;
}

std::string normalizeComputeCapability(std::string const& text)
{
    std::string t;
    for (char c : text)
    {
        if (c != '_' && !std::isspace(static_cast<unsigned char>(c)))
        {
            t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
    }
    for (char const* prefix : {"sm", "compute"})
    {
        if (t.rfind(prefix, 0) == 0)
        {
            t = t.substr(std::string(prefix).size());
        }
    }
    if (!t.empty() && (t.back() == 'a' || t.back() == 'f')) // sm_90a / sm_100f: arch-specific variants
    {
        t.pop_back();
    }
    // "<major>.<minor>" or "<major><minor>" (one minor digit, as CUDA spells SM names)
    std::size_t dot = t.find('.');
    auto digits = [](std::string const& s) {
        return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
    };
    std::string major;
    std::string minor;
    if (dot != std::string::npos)
    {
        major = t.substr(0, dot);
        minor = t.substr(dot + 1);
    }
    else if (t.size() >= 2)
    {
        major = t.substr(0, t.size() - 1);
        minor = t.substr(t.size() - 1);
    }
    if (!digits(major) || !digits(minor) || minor.size() != 1 || major.size() > 3)
    {
        return "";
    }
    return std::to_string(std::stoi(major)) + "." + minor;
}

std::string entryComputeCapability(EngineEntry const& entry)
{
    std::string direct = normalizeComputeCapability(entry.computeCapability);
    if (!direct.empty())
    {
        return direct;
    }
    // TensorRT's build-device name ends in "sm<major>.<minor>" (engines/toolkit.py: describe_toolkit).
    std::string lower;
    for (char c : entry.computeCapability)
    {
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::size_t at = lower.rfind("sm");
    while (at != std::string::npos)
    {
        std::size_t end = at + 2;
        while (end < lower.size()
            && (std::isdigit(static_cast<unsigned char>(lower[end])) || lower[end] == '.' || lower[end] == '_'))
        {
            ++end;
        }
        std::string found = normalizeComputeCapability(lower.substr(at, end - at));
        if (!found.empty())
        {
            return found;
        }
        at = at == 0 ? std::string::npos : lower.rfind("sm", at - 1);
    }
    return "";
}

bool toolkitVersionsMatch(std::string const& entryVersion, std::string const& runtimeVersion)
{
    std::vector<long> a = versionParts(entryVersion);
    std::vector<long> b = versionParts(runtimeVersion);
    return a.size() == 3 && b.size() == 3 && a == b;
}

std::string buildEngineCommand(Manifest const& m, std::string const& computeCapability)
{
    ScheduleEntry const& s = m.schedule;
    std::string cmd = "export-engine --model " + shellQuote(m.model.name);
    if (m.model.name.rfind("tiny-", 0) != 0)
    {
        cmd += " --model-path CHECKPOINT"; // released models need their weights; tiny presets are built from a seed
    }
    cmd += " --schedule " + s.kind;
    cmd += s.flopsTarget ? " --flops-target " + shortestDouble(*s.flopsTarget) : " --ratio " + shortestDouble(s.baseRatio);
    cmd += " --start-layer " + std::to_string(s.startLayer);
    cmd += " --dtype " + m.dtype + " --opset " + std::to_string(m.opset) + " --position-policy " + m.positionPolicy;
    cmd += " --audio-tokens-range " + std::to_string(m.audioTokensRange.min) + ":" + std::to_string(m.audioTokensRange.opt)
        + ":" + std::to_string(m.audioTokensRange.max);
    cmd += " --max-batch " + std::to_string(m.limits.maxBatch) + " --max-text-tokens "
        + std::to_string(m.limits.maxTextTokens) + " --max-new-tokens " + std::to_string(m.limits.maxNewTokens);
    cmd += " --compute-capability " + (computeCapability.empty() ? std::string("X.Y") : computeCapability);
    cmd += " --out " + shellQuote(m.directory.empty() ? std::string("EXPORT_DIR") : m.directory);
    return cmd;
}

EngineChoice chooseEngine(Manifest const& m, Platform const& platform, std::string const& requestedKey)
{
    EngineChoice choice;
    for (auto const& entry : m.engines)
    {
        choice.entries.push_back(judge(entry, platform));
    }
    choice.buildCommand = buildEngineCommand(m, platform.computeCapability);
    std::string where = m.directory.empty() ? m.source : m.directory;
    // TensorRT builds engines only for the GPU it runs on (engines/toolkit.py: check_local_target).
    std::string build = platform.known()
        ? "build them on this machine (" + platform.describe() + ") with: " + choice.buildCommand
        : "build them on a machine with the target GPU and TensorRT 10 (set --compute-capability to that GPU's) with: "
            + choice.buildCommand;

    if (!requestedKey.empty())
    {
        for (auto const& v : choice.entries)
        {
            if (v.entry->key != requestedKey)
            {
                continue;
            }
            if (!v.usable)
            {
                choice.reason = "engine entry " + requestedKey + " cannot run here: " + v.why + "; " + build;
                return choice;
            }
            choice.entry = v.entry;
            choice.checked = platform.known();
            choice.reason = "chosen by key" + std::string(platform.known() ? "; matches " + platform.describe() : "; " + v.why);
            return choice;
        }
        choice.reason = "no engine entry '" + requestedKey + "' in " + kManifestName + " of " + where + "; it holds: "
            + (choice.entries.empty() ? std::string("none") : listEntries(choice.entries));
        return choice;
    }
    if (m.engines.empty())
    {
        choice.reason = where + " holds no engines (exported with --skip-engines or without TensorRT); " + build;
        return choice;
    }
    if (!platform.known())
    {
        choice.reason = "not chosen: the GPU and TensorRT version are unknown here; pass the compute capability and "
                        "TensorRT version to see which entry such a GPU would use; the directory holds: "
            + listEntries(choice.entries);
        return choice;
    }
    for (auto const& v : choice.entries)
    {
        if (v.usable)
        {
            choice.entry = v.entry;
            choice.checked = true;
            choice.reason = "matches " + platform.describe();
            return choice;
        }
    }
    choice.reason = "no engine in " + where + " for " + platform.describe() + "; " + kManifestName
        + " holds: " + listEntries(choice.entries) + "; " + build;
    return choice;
}

EngineEntry const& selectEngine(Manifest const& m, Platform const& platform, std::string const& requestedKey)
{
    EngineChoice choice = chooseEngine(m, platform, requestedKey);
    if (!choice.entry)
    {
        throw Error(Status::kNoEngine, choice.reason);
    }
    return *choice.entry;
}

} // namespace fastadasp
