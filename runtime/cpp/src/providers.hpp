// Execution providers and session options (runtime/providers.py): what the caller asks for, and what
// ONNX Runtime really runs. Every provider named is required unless allow_fallback; "auto" asks for every
// available provider of TensorRT -> CUDA -> CPU and requires none but CPU.
#pragma once

#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>

#include "manifest.hpp"

namespace mtst::detail {

enum class Provider { TensorRT, CUDA, CPU };

const char* name_of(Provider p);
const char* ort_name_of(Provider p);

// which precision suits which provider, best first
std::vector<Precision> preference(Provider p);

struct ProviderPlan {
    std::vector<Provider> chain;  // best first, CPU last
    std::vector<Provider> required;
    bool allow_fallback = false;
};

struct Settings {
    int intra = 0, inter = 0;
    bool spinning = false;
    GraphOptimizationLevel level = ORT_ENABLE_ALL;
};

// The process's ONNX Runtime environment (created on first use).
Ort::Env& ort_env();

// A user chain ({"auto"}, {"cuda", "cpu"}, ONNX Runtime names) -> the plan; Error(Config) for an unknown
// name, Error(ProviderUnavailable) for a required provider this ONNX Runtime build lacks.
ProviderPlan resolve_providers(const std::vector<std::string>& names, bool allow_fallback);

// Session options for the plan; appends the GPU providers that really load (ONNX Runtime's C API fails
// here, rather than at run time, when a provider library is missing). Returns the providers in use.
std::vector<Provider> session_options(Ort::SessionOptions& so, const ProviderPlan& plan, const Settings& s);

}  // namespace mtst::detail
