# Sanitizer and fuzzer builds (README "Fuzzing and sanitizers"). Both want
# clang (-DCMAKE_CXX_COMPILER=clang++-14):
#   OCLIP_SANITIZE=ON       every oclip target (libraries, tests, the oclip
#                           executable) compiled and linked with ASan + UBSan
#   OCLIP_BUILD_FUZZERS=ON  also the libFuzzer targets of tests/fuzz/: the
#                           libraries get coverage instrumentation
#                           (-fsanitize=fuzzer-no-link); only the fuzz
#                           executables link libFuzzer (-fsanitize=fuzzer)
# One such build directory serves both the sanitizer test run and the fuzzers
# (scripts/test.sh, scripts/fuzz.sh). LibTorch, gRPC, FAISS and the other
# Debian libraries stay uninstrumented; tests/sanitizer/ holds the runtime
# options and suppressions that this needs.

option(OCLIP_SANITIZE "Build with AddressSanitizer + UndefinedBehaviorSanitizer (clang)" OFF)
option(OCLIP_BUILD_FUZZERS "Build the libFuzzer targets of tests/fuzz (clang; implies OCLIP_SANITIZE)" OFF)

if(OCLIP_BUILD_FUZZERS)
  set(OCLIP_SANITIZE ON CACHE BOOL "" FORCE)
endif()

if(OCLIP_SANITIZE OR OCLIP_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "OCLIP_SANITIZE / OCLIP_BUILD_FUZZERS need clang "
                        "(-DCMAKE_CXX_COMPILER=clang++-14); this is ${CMAKE_CXX_COMPILER_ID}")
  endif()
endif()

if(OCLIP_SANITIZE)
  # -fno-sanitize-recover: a UBSan finding aborts the test instead of printing
  # and carrying on, so CTest sees it. vptr is left out: it checks dynamic
  # types against RTTI of LibTorch/protobuf objects created in
  # uninstrumented code and is not what this build is after.
  set(OCLIP_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize=vptr
      -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_compile_options(${OCLIP_SANITIZER_FLAGS})
  add_link_options(-fsanitize=address,undefined)
endif()

if(OCLIP_BUILD_FUZZERS)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
