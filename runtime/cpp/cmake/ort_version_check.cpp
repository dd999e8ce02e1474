// Configure-time check: the ONNX Runtime library serves the API version of the headers we compile with.
// Prints the library's version; exits 1 when GetApi(ORT_API_VERSION) fails (headers newer than library).
#include <cstdio>

#include <onnxruntime_c_api.h>

int main() {
    const OrtApiBase* base = OrtGetApiBase();
    const char* version = base->GetVersionString();
    if (base->GetApi(ORT_API_VERSION) == nullptr) {
        std::printf("library %s does not serve API version %d\n", version, ORT_API_VERSION);
        return 1;
    }
    std::printf("%s\n", version);
    return 0;
}
