// A few macros for the C++ tests: each test file registers functions with TEST(name) and runs them all
// from main() with run_all(); a failed CHECK prints the file, line and values and marks the run failed.
#pragma once

#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mtst/error.hpp"

namespace check {

struct Case {
    const char* name;
    std::function<void()> fn;
};

inline std::vector<Case>& cases() {
    static std::vector<Case> all;
    return all;
}
inline int& failures() {
    static int n = 0;
    return n;
}

struct Register {
    Register(const char* name, std::function<void()> fn) { cases().push_back({name, std::move(fn)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
    ++failures();
    std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

// runs every registered test (or those whose name contains argv[1]); exit status 0 when all passed
inline int run_all(int argc, char** argv) {
    int ran = 0;
    for (const Case& c : cases()) {
        if (argc > 1 && std::string(c.name).find(argv[1]) == std::string::npos) continue;
        const int before = failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            fail(c.name, 0, std::string("unexpected exception: ") + e.what());
        }
        ++ran;
        std::cout << (failures() == before ? "ok      " : "FAILED  ") << c.name << "\n";
    }
    std::cout << ran << " tests, " << failures() << " failed checks\n";
    return failures() == 0 && ran > 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                             \
    static void name();                                                        \
    static check::Register CHECK_CAT(register_, name)(#name, name);            \
    static void name()

#define CHECK(cond)                                              \
    do {                                                         \
        if (!(cond)) check::fail(__FILE__, __LINE__, #cond);     \
    } while (0)

#define CHECK_EQ(a, b)                                                                  \
    do {                                                                                \
        const auto check_a_ = (a);  /* copies: (a) may be part of a temporary */         \
        const auto check_b_ = (b);                                                      \
        if (!(check_a_ == check_b_)) {                                                  \
            std::ostringstream check_os_;                                               \
            check_os_ << #a << " == " << #b << "\n    got:  " << check_a_ << "\n    want: " << check_b_; \
            check::fail(__FILE__, __LINE__, check_os_.str());                           \
        }                                                                               \
    } while (0)

// the expression must throw mtst::Error with exactly this message
#define CHECK_ERROR(expr, message)                                                                    \
    do {                                                                                              \
        try {                                                                                         \
            (void)(expr);                                                                             \
            check::fail(__FILE__, __LINE__, std::string(#expr) + " did not throw");                  \
        } catch (const mtst::Error& check_e_) {                                                       \
            if (std::string(check_e_.what()) != std::string(message))                                 \
                check::fail(__FILE__, __LINE__,                                                       \
                            std::string("message\n    got:  ") + check_e_.what() + "\n    want: " + (message)); \
        }                                                                                             \
    } while (0)

#define CHECK_MAIN \
    int main(int argc, char** argv) { return check::run_all(argc, argv); }
