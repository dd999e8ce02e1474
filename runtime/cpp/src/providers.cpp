#include "providers.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>

#include "mtst/error.hpp"
#include "pyformat.hpp"

namespace mtst::detail {

const char* name_of(Provider p) { return p == Provider::TensorRT ? "tensorrt" : p == Provider::CUDA ? "cuda" : "cpu"; }
const char* ort_name_of(Provider p) {
    return p == Provider::TensorRT ? "TensorrtExecutionProvider"
           : p == Provider::CUDA   ? "CUDAExecutionProvider"
                                   : "CPUExecutionProvider";
}

std::vector<Precision> preference(Provider p) {
    switch (p) {
        case Provider::CPU:
            return {Precision::Int8StaticCpu, Precision::Int8Dynamic, Precision::Fp32, Precision::Int8Static, Precision::Fp16};
        case Provider::CUDA:
            return {Precision::Fp16, Precision::Fp32, Precision::Int8Static, Precision::Int8StaticCpu, Precision::Int8Dynamic};
        case Provider::TensorRT:
            return {Precision::Int8Static, Precision::Fp16, Precision::Fp32, Precision::Int8StaticCpu, Precision::Int8Dynamic};
    }
    return {};
}

Ort::Env& ort_env() {
    // an edge runtime does not phone home: ONNX Runtime's telemetry events off (as the Python runtime does)
    static Ort::Env env = [] {
#ifndef _WIN32
        // before the environment exists: no device id, no offline event store, no upload (a caller's
        // own ORT_DISABLE_TELEMETRY wins)
        setenv("ORT_DISABLE_TELEMETRY", "1", 0);
#endif
        Ort::Env e(ORT_LOGGING_LEVEL_WARNING, "mtst");
        e.DisableTelemetryEvents();
        return e;
    }();
    return env;
}

ProviderPlan resolve_providers(const std::vector<std::string>& names, bool allow_fallback) {
    const std::vector<std::string> avail_list = Ort::GetAvailableProviders();
    const std::set<std::string> available(avail_list.begin(), avail_list.end());
    const Provider all[] = {Provider::TensorRT, Provider::CUDA, Provider::CPU};
    ProviderPlan plan;
    if (names.size() == 1 && (names[0] == "auto" || names[0] == "AUTO" || names[0] == "Auto")) {
        for (Provider p : all)
            if (available.count(ort_name_of(p))) plan.chain.push_back(p);
        if (plan.chain.empty() || plan.chain.back() != Provider::CPU) plan.chain.push_back(Provider::CPU);
        plan.required = {Provider::CPU};
        plan.allow_fallback = true;
        return plan;
    }
    if (names.empty())
        throw config_error("providers: empty list; name at least one of tensorrt, cuda, cpu (or 'auto')");
    std::vector<Provider> wanted;
    for (std::size_t i = 0; i < names.size(); ++i) {
        std::string key = names[i];
        std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        std::optional<Provider> p;
        for (Provider q : all)
            if (names[i] == ort_name_of(q) || key == name_of(q)) p = q;
        if (!p)
            throw config_error("providers[" + std::to_string(i) + "]: " + py_str_repr(names[i]) +
                               " is not one of ['tensorrt', 'cuda', 'cpu'] (or 'auto', or an ONNX Runtime name such "
                               "as 'CUDAExecutionProvider')");
        if (std::find(wanted.begin(), wanted.end(), *p) == wanted.end()) wanted.push_back(*p);
    }
    plan.allow_fallback = allow_fallback;
    for (Provider p : wanted) {
        if (available.count(ort_name_of(p))) {
            plan.chain.push_back(p);
            plan.required.push_back(p);
            continue;
        }
        if (!allow_fallback)
            throw Error(ErrorKind::ProviderUnavailable,
                        std::string("provider ") + name_of(p) + " (" + ort_name_of(p) +
                            ") is not available in this onnxruntime build " + Ort::GetVersionString() + " (available: " +
                            py_list({available.begin(), available.end()}) +
                            "); use an ONNX Runtime build with it, or allow_fallback to run on what is available");
    }
    if (std::find(plan.chain.begin(), plan.chain.end(), Provider::CPU) == plan.chain.end())
        plan.chain.push_back(Provider::CPU);
    return plan;
}

std::vector<Provider> session_options(Ort::SessionOptions& so, const ProviderPlan& plan, const Settings& s) {
    so.SetIntraOpNumThreads(s.intra);
    so.SetInterOpNumThreads(s.inter);
    so.SetGraphOptimizationLevel(s.level);
    so.AddConfigEntry("session.intra_op.allow_spinning", s.spinning ? "1" : "0");
    so.AddConfigEntry("session.inter_op.allow_spinning", s.spinning ? "1" : "0");
    // providers.CPU_DISABLED_OPTIMIZERS: SkipLayerNormalization's CPU kernel is slow in onnxruntime 1.32
    if (plan.chain.front() == Provider::CPU)
        so.AddConfigEntry("optimization.disable_specified_optimizers", "SkipLayerNormFusion");
    std::vector<Provider> active;
    for (Provider p : plan.chain) {
        if (p == Provider::CPU) continue;
        try {
            if (p == Provider::CUDA) {
                OrtCUDAProviderOptionsV2* opts = nullptr;
                Ort::ThrowOnError(Ort::GetApi().CreateCUDAProviderOptions(&opts));
                std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(Ort::GetApi().ReleaseCUDAProviderOptions)> guard(
                    opts, Ort::GetApi().ReleaseCUDAProviderOptions);
                so.AppendExecutionProvider_CUDA_V2(*opts);
            } else {
                OrtTensorRTProviderOptionsV2* opts = nullptr;
                Ort::ThrowOnError(Ort::GetApi().CreateTensorRTProviderOptions(&opts));
                std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(Ort::GetApi().ReleaseTensorRTProviderOptions)>
                    guard(opts, Ort::GetApi().ReleaseTensorRTProviderOptions);
                const char* keys[] = {"trt_fp16_enable"};
                const char* values[] = {"True"};
                Ort::ThrowOnError(Ort::GetApi().UpdateTensorRTProviderOptions(opts, keys, values, 1));
                so.AppendExecutionProvider_TensorRT_V2(*opts);
            }
            active.push_back(p);
        } catch (const Ort::Exception& e) {
            const bool required = std::find(plan.required.begin(), plan.required.end(), p) != plan.required.end();
            if (required && !plan.allow_fallback)
                throw Error(ErrorKind::ProviderUnavailable,
                            std::string("provider(s) ['") + name_of(p) + "'] were requested but ONNX Runtime cannot load it (" +
                                e.what() + "); pass allow_fallback to accept the fallback");
        }
    }
    active.push_back(Provider::CPU);
    return active;
}

}  // namespace mtst::detail
