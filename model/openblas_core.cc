#include "model/openblas_core.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

namespace oclip {
namespace {

// OpenBLAS's exported functions, looked up at run time: the BLAS may be
// another library (or none of OpenBLAS's runtime selection), and then
// nothing here applies.
struct OpenBlasRuntime {
  const char* (*corename)() = nullptr;
  void (*dynamic_quit)() = nullptr;
  void (*dynamic_init)() = nullptr;
};

OpenBlasRuntime FindOpenBlas() {
  OpenBlasRuntime runtime;
  runtime.corename =
      reinterpret_cast<const char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  runtime.dynamic_quit = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  runtime.dynamic_init = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  return runtime;
}

}  // namespace

// libgcc's check includes XCR0 (the OS saving the registers).
bool CpuRunsOpenBlasSkylakeXKernels() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

OpenBlasCore SelectOpenBlasCore() {
  const OpenBlasRuntime runtime = FindOpenBlas();
  OpenBlasCore core;
  if (runtime.corename == nullptr) return core;
  core.detected = runtime.corename();
  core.selected = core.detected;
  if (runtime.dynamic_quit == nullptr || runtime.dynamic_init == nullptr) return core;
  if (core.detected != "Prescott" || std::getenv("OPENBLAS_CORETYPE") != nullptr ||
      !CpuRunsOpenBlasSkylakeXKernels()) {
    return core;
  }
  setenv("OPENBLAS_CORETYPE", "SkylakeX", /*overwrite=*/0);
  // gotoblas_dynamic_init keeps an existing choice: quit clears it first.
  runtime.dynamic_quit();
  runtime.dynamic_init();
  core.selected = runtime.corename();
  return core;
}

std::string OpenBlasCoreName() {
  const OpenBlasRuntime runtime = FindOpenBlas();
  return runtime.corename != nullptr ? runtime.corename() : "";
}

}  // namespace oclip
