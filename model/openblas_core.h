// Which kernels OpenBLAS runs LibTorch's fp32 BLAS calls on, and the repair
// for CPUs it does not know.
//
// Debian's LibTorch does its fp32 GEMMs through libblas.so.3, which is
// OpenBLAS (scripts/install-deps.sh installs libopenblas0-pthread). That
// OpenBLAS picks its kernels at load time from the CPU model; one it does not
// know gets its generic SSE3 "Prescott" kernels. Debian 12's OpenBLAS 0.3.21
// does not know Emerald Rapids (CPU model 207): measured there, a 1024^3
// SGEMM on 2 threads ran at 18 GFLOP/s on Prescott kernels and 146 GFLOP/s on
// its SkylakeX (AVX-512) kernels. oclip's own AMX/AVX-512 kernels do not go
// through BLAS, but training, OCLIP_FP32_MATMUL_PRECISION=highest, the final
// projections and zero-shot scoring do. OPENBLAS_CORETYPE chooses the
// kernels, but only when set before the library loads, which for a program
// linked against it means before the program starts.

#ifndef OCLIP_MODEL_OPENBLAS_CORE_H_
#define OCLIP_MODEL_OPENBLAS_CORE_H_

#include <string>

namespace oclip {

struct OpenBlasCore {
  std::string detected;  // the kernels OpenBLAS had chosen; empty: no OpenBLAS here
  std::string selected;  // the kernels it runs now (detected unless switched)
};

// Where this process's BLAS is an OpenBLAS that picks its kernels at run time
// (DYNAMIC_ARCH, as Debian's), it chose "Prescott" (the fallback for a CPU it
// does not know), the CPU and OS support AVX-512 F/CD/BW/DQ/VL, and
// OPENBLAS_CORETYPE is unset: sets OPENBLAS_CORETYPE=SkylakeX (inherited by
// child processes) and has OpenBLAS choose again, through its exported
// gotoblas_dynamic_quit/gotoblas_dynamic_init. Otherwise changes nothing.
// Call it first in main, before any BLAS call and before other threads start
// (OpenBLAS's own are idle then): a BLAS call running meanwhile could read
// the kernel table as it is replaced.
OpenBlasCore SelectOpenBlasCore();

// Whether this CPU and OS can run OpenBLAS's SkylakeX kernels: AVX-512 F, CD,
// BW, DQ and VL, with the OS saving their registers. False off x86.
bool CpuRunsOpenBlasSkylakeXKernels();

// The kernels OpenBLAS runs now ("SkylakeX", "Prescott", ...), or empty where
// this process's BLAS is not OpenBLAS.
std::string OpenBlasCoreName();

}  // namespace oclip

#endif  // OCLIP_MODEL_OPENBLAS_CORE_H_
