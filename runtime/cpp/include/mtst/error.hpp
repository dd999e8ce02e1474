// The one exception family of the C++ runtime, mirroring mtst.errors.
//
// Messages name the file, field or value and what was expected, word for word as the Python runtime
// writes them where both runtimes meet the same problem (bundle verification, manifest fields).
#pragma once

#include <stdexcept>
#include <string>

#if defined(_WIN32)
#define MTST_API __declspec(dllexport)
#else
#define MTST_API __attribute__((visibility("default")))
#endif

namespace mtst {

enum class ErrorKind {
    Bundle,               // a bundle is missing a file, fails verification or does not fit the request
    Config,               // an option or argument is invalid
    ProviderUnavailable,  // an execution provider the caller required cannot be used
    Input,                // a text or other input is invalid (Python: ValueError / TypeError)
    Runtime,              // ONNX Runtime failed while running a graph
};

class MTST_API Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }
    // "BundleError", "ConfigError", "ProviderUnavailableError", "ValueError", "RuntimeError"
    const char* kind_name() const noexcept;

private:
    ErrorKind kind_;
};

inline const char* Error::kind_name() const noexcept {
    switch (kind_) {
        case ErrorKind::Bundle: return "BundleError";
        case ErrorKind::Config: return "ConfigError";
        case ErrorKind::ProviderUnavailable: return "ProviderUnavailableError";
        case ErrorKind::Input: return "ValueError";
        case ErrorKind::Runtime: return "RuntimeError";
    }
    return "Error";
}

inline Error bundle_error(const std::string& m) { return Error(ErrorKind::Bundle, m); }
inline Error config_error(const std::string& m) { return Error(ErrorKind::Config, m); }
inline Error input_error(const std::string& m) { return Error(ErrorKind::Input, m); }

}  // namespace mtst
