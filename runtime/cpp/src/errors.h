// One error type for the whole runtime. Every failure a caller can act on carries a status (mapped one to one
// onto fastadasp_status in the C API) and a one-line message that names the file, option or limit and the fix,
// like the Python side's UserError (fastadasp/core/errors.py).
#pragma once

#include <stdexcept>
#include <string>

namespace fastadasp
{

enum class Status : int
{
    kOk = 0,
    kInvalidArgument = 1, // a bad option or request value
    kManifest = 2,        // missing / unreadable / other-version manifest, missing key, file that does not hash
    kNoEngine = 3,        // no engine entry for this GPU and toolkit
    kLimits = 4,          // the request exceeds the export's serving limits or an engine profile
    kUnavailable = 5,     // built without TensorRT, no CUDA device, executor cannot run
    kBackend = 6,         // TensorRT or CUDA failed while running
    kInternal = 7,        // a broken invariant inside the runtime
};

class Error : public std::runtime_error
{
public:
    Error(Status status, std::string const& message)
        : std::runtime_error(message)
        , mStatus(status)
    {
    }

    Status status() const noexcept
    {
        return mStatus;
    }

private:
    Status mStatus;
};

} // namespace fastadasp
