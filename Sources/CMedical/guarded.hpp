// The error convention of CMedical's extern "C" entry points (medical.cpp,
// dicom_write.cpp): a body that throws `Refusal` (by `refuse`) returns 1 with
// the message in `err`; anything else thrown becomes a named failure. Internal:
// not under include/, so not part of the module Swift sees.
#pragma once
#include <cstdio>
#include <exception>
#include <new>
#include <string>

namespace cmedical {

inline int fail(char *err, int errlen, const std::string &message) {
    if (err && errlen > 0) std::snprintf(err, (size_t)errlen, "%s", message.c_str());
    return 1;
}

/// A refusal, thrown inside an entry point and turned into its message by `guarded`.
struct Refusal { std::string message; };
[[noreturn]] inline void refuse(const std::string &message) { throw Refusal{message}; }

template <class Body> int guarded(char *err, int errlen, Body body) {
    try {
        body();
        return 0;
    } catch (const Refusal &r) {
        return fail(err, errlen, r.message);
    } catch (const std::bad_alloc &) {
        return fail(err, errlen, "out of memory");
    } catch (const std::exception &e) {
        return fail(err, errlen, std::string("unexpected error (") + e.what() + ")");
    } catch (...) {
        return fail(err, errlen, "unexpected error");
    }
}

}  // namespace cmedical
