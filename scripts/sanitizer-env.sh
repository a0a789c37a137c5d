# Sourced by scripts/test.sh and scripts/fuzz.sh: the runtime options of the
# ASan + UBSan build (build-sanitize). Each suppression file says why each
# entry is there; none may hide a finding in oclip's own code.
sanitizer_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/sanitizer"
# detect_leaks: on, with tests/sanitizer/lsan.supp for third-party one-time
#   allocations.
# alloc_dealloc_mismatch=0: Debian's LibTorch/protobuf are uninstrumented; a
#   new[]/delete pair split across an inlined header and the library looks
#   mismatched to ASan.
# detect_odr_violation=0: gRPC, protobuf and Abseil are linked from several
#   shared libraries, so their globals exist twice by construction.
# strict_string_checks/check_initialization_order: oclip's own code is held to
#   them.
export ASAN_OPTIONS="detect_leaks=1:alloc_dealloc_mismatch=0:detect_odr_violation=0:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=0:abort_on_error=0:halt_on_error=1:print_summary=1"
export LSAN_OPTIONS="suppressions=${sanitizer_dir}/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="suppressions=${sanitizer_dir}/ubsan.supp:print_stacktrace=1:halt_on_error=1:report_error_type=1"
