/*
 * Build-time harness for the WeightedMerge plugin library, without TensorRT: it dlopens the library, takes the
 * creator from getCreators() like a plugin registry does, and calls the methods a builder calls at build time
 * (createPlugin, getOutputShapes with its own IExprBuilder, getOutputDataTypes, supportsFormatCombination,
 * getWorkspaceSize, clone, getFieldsToSerialize). It prints JSON lines of what it observed; the Python tests
 * (tests/plugins/test_harness.py) compare them with the length rule and the supported type list.
 *
 * usage: weighted_merge_harness LIBRARY Q[,Q...] MAX_TOKENS
 */
#include "NvInferRuntime.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// ------------------------------------------------------------------------------ a test IExprBuilder

// Expression tree over the variables B (batch) and n (tokens); constants fold like TensorRT's builder does.
struct Node
{
    enum Kind
    {
        kCONST,
        kVAR_B,
        kVAR_N,
        kOP
    } kind;
    int64_t value;
    DimensionOperation op;
    Node const* a;
    Node const* b;
};

int64_t floorDiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
    {
        --q;
    }
    return q;
}

int64_t apply(DimensionOperation op, int64_t a, int64_t b)
{
    switch (op)
    {
    case DimensionOperation::kSUM: return a + b;
    case DimensionOperation::kPROD: return a * b;
    case DimensionOperation::kMAX: return a > b ? a : b;
    case DimensionOperation::kMIN: return a < b ? a : b;
    case DimensionOperation::kSUB: return a - b;
    case DimensionOperation::kEQUAL: return a == b;
    case DimensionOperation::kLESS: return a < b;
    case DimensionOperation::kFLOOR_DIV: return floorDiv(a, b);
    case DimensionOperation::kCEIL_DIV: return -floorDiv(-a, b);
    }
    std::fprintf(stderr, "unknown DimensionOperation %d\n", static_cast<int>(op));
    std::exit(3);
}

int64_t evaluate(Node const* node, int64_t batch, int64_t tokens)
{
    switch (node->kind)
    {
    case Node::kCONST: return node->value;
    case Node::kVAR_B: return batch;
    case Node::kVAR_N: return tokens;
    case Node::kOP: return apply(node->op, evaluate(node->a, batch, tokens), evaluate(node->b, batch, tokens));
    }
    return 0;
}

class TestExprImpl final : public apiv::VDimensionExpr
{
public:
    explicit TestExprImpl(Node const* node)
        : mNode(node)
    {
    }
    bool isConstant() const override
    {
        return mNode->kind == Node::kCONST;
    }
    int64_t getConstantValue() const override
    {
        return isConstant() ? mNode->value : INT64_MIN;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    Node const* mNode;
};

class TestExpr final : public IDimensionExpr
{
public:
    explicit TestExpr(Node node)
        : mNode(node)
        , mImplObject(&mNode)
    {
        mImpl = &mImplObject;
    }
    ~TestExpr() override = default;
    Node const* node() const
    {
        return &mNode;
    }

private:
    Node mNode;
    TestExprImpl mImplObject;
};

class TestExprBuilderImpl final : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return make(Node{Node::kCONST, value, DimensionOperation::kSUM, nullptr, nullptr});
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        Node const* a = static_cast<TestExpr const&>(first).node();
        Node const* b = static_cast<TestExpr const&>(second).node();
        ++operations[static_cast<int>(op)];
        if (a->kind == Node::kCONST && b->kind == Node::kCONST)
        {
            return constant(apply(op, a->value, b->value));
        }
        return make(Node{Node::kOP, 0, op, a, b});
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        sizeTensorDeclared = true; // the output shapes must not depend on data
        return nullptr;
    }
    TestExpr const* make(Node node)
    {
        mExprs.emplace_back(new TestExpr(node));
        return mExprs.back().get();
    }

    int operations[16] = {};
    bool sizeTensorDeclared = false;

private:
    std::vector<std::unique_ptr<TestExpr>> mExprs;
};

class TestExprBuilder final : public IExprBuilder
{
public:
    TestExprBuilder()
    {
        mImpl = &impl;
    }
    ~TestExprBuilder() override = default;
    TestExprBuilderImpl impl;
};

// ------------------------------------------------------------------------------ helpers

using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
using LastError = char const* (*) ();

[[noreturn]] void die(std::string const& message)
{
    std::fprintf(stderr, "harness: %s\n", message.c_str());
    std::exit(2);
}

std::string quoted(char const* s)
{
    std::string out = "\"";
    for (char const* p = s ? s : ""; *p; ++p)
    {
        if (*p == '"' || *p == '\\')
        {
            out += '\\';
        }
        out += (static_cast<unsigned char>(*p) < 0x20) ? ' ' : *p;
    }
    return out + "\"";
}

IPluginV3* create(IPluginCreatorV3One* creator, PluginField const* fields, int32_t count, TensorRTPhase phase)
{
    PluginFieldCollection fc{count, fields};
    return creator->createPlugin("weighted_merge_harness", &fc, phase);
}

IPluginV3* createWithQ(IPluginCreatorV3One* creator, int32_t q)
{
    PluginField field("ratio_numerator", &q, PluginFieldType::kINT32, 1);
    return create(creator, &field, 1, TensorRTPhase::kBUILD);
}

IPluginV3OneBuild* buildInterface(IPluginV3* plugin)
{
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    if (build == nullptr)
    {
        die("getCapabilityInterface(kBUILD) returned null");
    }
    return build;
}

int32_t serializedQ(IPluginV3* plugin)
{
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (runtime == nullptr)
    {
        die("getCapabilityInterface(kRUNTIME) returned null");
    }
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 1 || std::strcmp(fc->fields[0].name, "ratio_numerator") != 0
        || fc->fields[0].type != PluginFieldType::kINT32 || fc->fields[0].length != 1)
    {
        die("getFieldsToSerialize must return exactly ratio_numerator as one kINT32");
    }
    return *static_cast<int32_t const*>(fc->fields[0].data);
}

DynamicPluginTensorDesc tensor(DataType type, std::vector<int64_t> const& dims, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.scale = -1.0F;
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    d.min.nbDims = d.max.nbDims = d.opt.nbDims = d.desc.dims.nbDims;
    for (size_t i = 0; i < dims.size(); ++i)
    {
        d.desc.dims.d[i] = dims[i];
        d.min.d[i] = d.opt.d[i] = d.max.d[i] = dims[i];
    }
    return d;
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "fp32";
    case DataType::kHALF: return "fp16";
    case DataType::kBF16: return "bf16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    default: return "other";
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        die("usage: weighted_merge_harness LIBRARY Q[,Q...] MAX_TOKENS");
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        die(std::string("dlopen failed: ") + dlerror());
    }
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto lastError = reinterpret_cast<LastError>(dlsym(lib, "fastadasp_weighted_merge_last_error"));
    if (getCreators == nullptr || lastError == nullptr)
    {
        die("the library lacks getCreators or fastadasp_weighted_merge_last_error");
    }
    std::vector<int32_t> qs;
    {
        std::stringstream list(argv[2]);
        std::string item;
        while (std::getline(list, item, ','))
        {
            qs.push_back(static_cast<int32_t>(std::stol(item)));
        }
    }
    int64_t const maxTokens = std::stoll(argv[3]);

    // ---- creator
    int32_t nbCreators = -1;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    if (creators == nullptr || nbCreators != 1)
    {
        die("getCreators must return one creator");
    }
    InterfaceInfo const info = creators[0]->getInterfaceInfo();
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    PluginFieldCollection const* names = creator->getFieldNames();
    std::printf("{\"creator\": {\"kind\": %s, \"major\": %d, \"name\": %s, \"version\": %s, \"namespace\": %s, "
                "\"field_names\": [",
        quoted(info.kind).c_str(), info.major, quoted(creator->getPluginName()).c_str(),
        quoted(creator->getPluginVersion()).c_str(), quoted(creator->getPluginNamespace()).c_str());
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
    {
        std::printf("%s[%s, %d]", i ? ", " : "", quoted(names->fields[i].name).c_str(),
            static_cast<int>(names->fields[i].type));
    }
    std::printf("]}}\n");

    // ---- output shapes, symbolic and constant, for every q
    int64_t const hidden = 24;
    int64_t const keyDim = 40;
    for (int32_t q : qs)
    {
        std::unique_ptr<IPluginV3> plugin(createWithQ(creator, q));
        if (!plugin)
        {
            die("createPlugin failed for q=" + std::to_string(q) + ": " + lastError());
        }
        IPluginV3OneBuild* build = buildInterface(plugin.get());

        TestExprBuilder builder;
        IDimensionExpr const* b = builder.impl.make(Node{Node::kVAR_B, 0, DimensionOperation::kSUM, nullptr, nullptr});
        IDimensionExpr const* n = builder.impl.make(Node{Node::kVAR_N, 0, DimensionOperation::kSUM, nullptr, nullptr});
        IDimensionExpr const* d = builder.impl.constant(hidden);
        IDimensionExpr const* k = builder.impl.constant(keyDim);
        DimsExprs inputs[3];
        inputs[0].nbDims = 3;
        inputs[0].d[0] = b;
        inputs[0].d[1] = n;
        inputs[0].d[2] = d;
        inputs[1].nbDims = 3;
        inputs[1].d[0] = b;
        inputs[1].d[1] = n;
        inputs[1].d[2] = k;
        inputs[2].nbDims = 2;
        inputs[2].d[0] = b;
        inputs[2].d[1] = n;
        DimsExprs outputs[2];
        int32_t const status = build->getOutputShapes(inputs, 3, nullptr, 0, outputs, 2, builder);
        if (status != 0)
        {
            die("getOutputShapes failed: " + std::string(lastError()));
        }
        auto const* mergedLen = static_cast<TestExpr const*>(outputs[0].d[1])->node();
        auto const* sourceLen = static_cast<TestExpr const*>(outputs[1].d[1])->node();
        bool const batchKept = outputs[0].d[0] == b && outputs[1].d[0] == b;
        bool const hiddenKept = outputs[0].nbDims == 3 && outputs[1].nbDims == 2
            && static_cast<TestExpr const*>(outputs[0].d[2])->node()->kind == Node::kCONST
            && outputs[0].d[2]->getConstantValue() == hidden;
        std::printf("{\"q\": %d, \"symbolic\": true, \"batch_passthrough\": %s, \"hidden_passthrough\": %s, "
                    "\"size_tensor\": %s, \"ops\": {\"prod\": %d, \"floor_div\": %d, \"min\": %d, \"max\": %d, \"sub\": %d}, "
                    "\"kept\": [",
            q, batchKept ? "true" : "false", hiddenKept ? "true" : "false",
            builder.impl.sizeTensorDeclared ? "true" : "false",
            builder.impl.operations[int(DimensionOperation::kPROD)],
            builder.impl.operations[int(DimensionOperation::kFLOOR_DIV)],
            builder.impl.operations[int(DimensionOperation::kMIN)],
            builder.impl.operations[int(DimensionOperation::kMAX)],
            builder.impl.operations[int(DimensionOperation::kSUB)]);
        bool sameLength = true;
        for (int64_t tokens = 0; tokens <= maxTokens; ++tokens)
        {
            int64_t const kept = evaluate(mergedLen, 2, tokens);
            sameLength = sameLength && kept == evaluate(sourceLen, 2, tokens);
            std::printf("%s%lld", tokens ? ", " : "", static_cast<long long>(kept));
        }
        std::printf("], \"outputs_agree\": %s}\n", sameLength ? "true" : "false");

        // constant inputs (a static profile): TensorRT's builder folds them; so does the test builder
        for (int64_t tokens : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{1500}, int64_t{3000}})
        {
            TestExprBuilder folding;
            DimsExprs fixed[3] = {inputs[0], inputs[1], inputs[2]};
            IDimensionExpr const* nConst = folding.impl.constant(tokens);
            IDimensionExpr const* bConst = folding.impl.constant(3);
            IDimensionExpr const* dConst = folding.impl.constant(hidden);
            IDimensionExpr const* kConst = folding.impl.constant(keyDim);
            fixed[0].d[0] = fixed[1].d[0] = fixed[2].d[0] = bConst;
            fixed[0].d[1] = fixed[1].d[1] = fixed[2].d[1] = nConst;
            fixed[0].d[2] = dConst;
            fixed[1].d[2] = kConst;
            DimsExprs out[2];
            if (build->getOutputShapes(fixed, 3, nullptr, 0, out, 2, folding) != 0)
            {
                die("getOutputShapes (constant) failed: " + std::string(lastError()));
            }
            std::printf("{\"q\": %d, \"constant_n\": %lld, \"is_constant\": %s, \"kept\": %lld}\n", q,
                static_cast<long long>(tokens), out[0].d[1]->isConstant() ? "true" : "false",
                static_cast<long long>(out[0].d[1]->getConstantValue()));
        }

        // clone keeps q; the serialised fields recreate the same plugin at run time
        std::unique_ptr<IPluginV3> copy(plugin->clone());
        if (!copy)
        {
            die("clone returned null");
        }
        int32_t const fromFields = serializedQ(copy.get());
        PluginFieldCollection const* fc
            = static_cast<IPluginV3OneRuntime*>(copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
                  ->getFieldsToSerialize();
        std::unique_ptr<IPluginV3> revived(create(creator, fc->fields, fc->nbFields, TensorRTPhase::kRUNTIME));
        if (!revived)
        {
            die("createPlugin(kRUNTIME) from serialised fields failed: " + std::string(lastError()));
        }
        plugin.reset(); // the clone must not depend on the original
        std::printf("{\"q\": %d, \"clone_q\": %d, \"runtime_q\": %d, \"clone_is_distinct\": %s}\n", q, fromFields,
            serializedQ(revived.get()), copy.get() != revived.get() ? "true" : "false");
    }

    // ---- types and formats: every accepted combination, asked position by position like a builder does
    {
        std::unique_ptr<IPluginV3> plugin(createWithQ(creator, 19661));
        IPluginV3OneBuild* build = buildInterface(plugin.get());
        DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8,
            DataType::kINT32, DataType::kINT64};
        std::vector<std::vector<int64_t>> const dims = {{2, 9, 24}, {2, 9, 40}, {2, 9}, {2, 7, 24}, {2, 7}};
        std::printf("{\"formats\": [");
        int printed = 0;
        int64_t const nbTypes = sizeof(types) / sizeof(types[0]);
        int64_t combos = 1;
        for (int i = 0; i < 5; ++i)
        {
            combos *= nbTypes;
        }
        for (int64_t c = 0; c < combos; ++c)
        {
            DynamicPluginTensorDesc inOut[5];
            int64_t code = c;
            for (int pos = 0; pos < 5; ++pos)
            {
                inOut[pos] = tensor(types[code % nbTypes], dims[pos]);
                code /= nbTypes;
            }
            bool accepted = true;
            for (int pos = 0; pos < 5 && accepted; ++pos)
            {
                accepted = build->supportsFormatCombination(pos, inOut, 3, 2);
            }
            if (accepted)
            {
                std::printf("%s[", printed++ ? ", " : "");
                for (int pos = 0; pos < 5; ++pos)
                {
                    std::printf("%s\"%s\"", pos ? ", " : "", typeName(inOut[pos].desc.type));
                }
                std::printf("]");
            }
        }
        // a non-linear format is refused at every position
        DynamicPluginTensorDesc vectorized[5] = {tensor(DataType::kHALF, dims[0], TensorFormat::kHWC8),
            tensor(DataType::kHALF, dims[1]), tensor(DataType::kFLOAT, dims[2]), tensor(DataType::kHALF, dims[3]),
            tensor(DataType::kINT64, dims[4])};
        bool const nonLinear = build->supportsFormatCombination(0, vectorized, 3, 2);
        std::printf("], \"non_linear_accepted\": %s, \"bad_position_accepted\": %s}\n", nonLinear ? "true" : "false",
            build->supportsFormatCombination(5, vectorized, 3, 2) ? "true" : "false");

        // output types follow x
        std::printf("{\"output_types\": [");
        DataType const floats[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
        for (int i = 0; i < 3; ++i)
        {
            DataType in[3] = {floats[i], floats[i], DataType::kFLOAT};
            DataType out[2] = {DataType::kINT8, DataType::kINT8};
            int32_t const status = build->getOutputDataTypes(out, 2, in, 3);
            std::printf("%s[\"%s\", %d, \"%s\", \"%s\"]", i ? ", " : "", typeName(floats[i]), status,
                typeName(out[0]), typeName(out[1]));
        }
        std::printf("], \"nb_outputs\": %d}\n", build->getNbOutputs());

        // workspace for several profile maxima, and configurePlugin accepting them
        std::printf("{\"workspace\": [");
        int64_t const shapes[][2] = {{1, 1}, {1, 2}, {1, 64}, {4, 128}, {1, 3000}, {8, 3000}, {1, 4096}, {1, 4097},
            {2, 8192}};
        int i = 0;
        for (auto const& s : shapes)
        {
            DynamicPluginTensorDesc in[3] = {tensor(DataType::kHALF, {s[0], s[1], 24}),
                tensor(DataType::kHALF, {s[0], s[1], 40}), tensor(DataType::kFLOAT, {s[0], s[1]})};
            DynamicPluginTensorDesc out[2] = {tensor(DataType::kHALF, {s[0], s[1], 24}), tensor(DataType::kINT64, {s[0], s[1]})};
            int32_t const configured = build->configurePlugin(in, 3, out, 2);
            size_t const bytes = build->getWorkspaceSize(in, 3, out, 2);
            std::printf("%s[%lld, %lld, %zu, %d]", i++ ? ", " : "", static_cast<long long>(s[0]),
                static_cast<long long>(s[1]), bytes, configured);
        }
        std::printf("]}\n");
    }

    // ---- bad fields fail with nullptr and a message, never an exception
    {
        std::printf("{\"errors\": {");
        IPluginV3* none = create(creator, nullptr, 0, TensorRTPhase::kBUILD);
        std::printf("\"missing\": [%s, %s]", none ? "true" : "false", quoted(lastError()).c_str());
        int32_t const tooBig = 65536;
        PluginField big("ratio_numerator", &tooBig, PluginFieldType::kINT32, 1);
        IPluginV3* bigPlugin = create(creator, &big, 1, TensorRTPhase::kBUILD);
        std::printf(", \"out_of_range\": [%s, %s]", bigPlugin ? "true" : "false", quoted(lastError()).c_str());
        float const asFloat = 0.3F;
        PluginField wrongType("ratio_numerator", &asFloat, PluginFieldType::kFLOAT32, 1);
        IPluginV3* floatPlugin = create(creator, &wrongType, 1, TensorRTPhase::kBUILD);
        std::printf(", \"float_field\": [%s, %s]", floatPlugin ? "true" : "false", quoted(lastError()).c_str());
        int64_t const wide = 32768;
        char const* version = "1";
        PluginField mixed[2] = {PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
            PluginField("ratio_numerator", &wide, PluginFieldType::kINT64, 1)};
        std::unique_ptr<IPluginV3> widePlugin(create(creator, mixed, 2, TensorRTPhase::kBUILD));
        std::printf(", \"int64_field_q\": %d}}\n", widePlugin ? serializedQ(widePlugin.get()) : -1);
        delete none;
        delete bigPlugin;
        delete floatPlugin;
    }
    std::fflush(stdout);
    return 0;
}
