// SHA-256 of files, to check that an engine or plugin library is the one manifest.json records (the same
// check Python's Manifest.verify_files makes). Self-contained so the runtime needs no crypto library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastadasp
{

class Sha256
{
public:
    Sha256();
    void update(void const* data, std::size_t size);
    std::string hexdigest(); // finishes the hash; call once

private:
    void block(unsigned char const* chunk);

    uint32_t mState[8];
    unsigned char mBuffer[64];
    std::size_t mBuffered = 0;
    uint64_t mBytes = 0;
};

std::string sha256Hex(void const* data, std::size_t size);

// Throws fastadasp::Error(kManifest) when the file cannot be read.
std::string sha256File(std::string const& path);

} // namespace fastadasp
