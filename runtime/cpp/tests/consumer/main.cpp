// Built against an installed mtst (find_package): loads a bundle and prints one prediction.
#include <iostream>

#include <mtst/engine.hpp>
#include <mtst/mtst.h>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: consumer BUNDLE\n";
        return 2;
    }
    try {
        mtst::LoadOptions options;
        options.providers = {"cpu"};
        options.intra_op_threads = 1;
        const auto engine = mtst::Engine::load(argv[1], options);
        const auto results = engine.predict({"Apple opened an office in Paris."});
        std::cout << results[0].to_json(false, false) << "\n" << "C API " << mtst_version() << "\n";
        return 0;
    } catch (const mtst::Error& e) {
        std::cerr << e.kind_name() << ": " << e.what() << "\n";
        return 1;
    }
}
