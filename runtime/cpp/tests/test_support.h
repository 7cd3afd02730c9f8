// Helpers shared by the C++ tests: the committed example export (a tiny-llama export's manifest.json, no graph
// files: the runtime never opens them), temporary export directories with edited manifests.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace fastadasp::testing
{

inline std::string testData(std::string const& relative)
{
    return std::string(FASTADASP_TEST_DATA) + "/" + relative;
}

inline std::string exampleExport()
{
    return testData("data/export");
}

inline std::string readText(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline nlohmann::json exampleManifest()
{
    return nlohmann::json::parse(readText(exampleExport() + "/manifest.json"));
}

// A fresh directory under the system temp folder, removed with everything in it.
class TempDir
{
public:
    TempDir()
    {
        std::string pattern = (std::filesystem::temp_directory_path() / "fastadasp-cpp-XXXXXX").string();
        char* made = mkdtemp(pattern.data());
        mPath = made ? made : "";
    }
    ~TempDir()
    {
        std::error_code ignored;
        std::filesystem::remove_all(mPath, ignored);
    }
    TempDir(TempDir const&) = delete;
    TempDir& operator=(TempDir const&) = delete;

    std::string const& path() const
    {
        return mPath;
    }
    std::string write(std::string const& name, std::string const& text) const
    {
        std::string file = mPath + "/" + name;
        std::ofstream(file, std::ios::binary) << text;
        return file;
    }
    std::string writeManifest(nlohmann::json const& manifest) const
    {
        return write("manifest.json", manifest.dump(2));
    }

private:
    std::string mPath;
};

} // namespace fastadasp::testing
