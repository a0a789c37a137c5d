# Third-party packages. Everything comes from Debian 12 packages except LibTorch,
# which may also be PyTorch's own (-DCMAKE_PREFIX_PATH=<torch>/share/cmake) on
# the GPU machine; model/torch_compat.h absorbs the version differences.

find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)

# Text: ICU (Unicode classes, normalization, case folding), zlib (the gzipped
# BPE vocabulary). Downloads: libcurl. (No libsentencepiece: see model/.)
find_package(ICU REQUIRED COMPONENTS uc i18n)
find_package(ZLIB REQUIRED)
find_package(CURL REQUIRED)
# JPEG decoding goes straight to libjpeg-turbo (PIL's decoder) when libvips's
# per-image set-up would cost as much as the decode.
find_package(JPEG)

# spdlog is optional for the model library so that model/ builds against a bare
# LibTorch (the GPU machine has no Debian packages); core/ falls back to stderr.
find_package(spdlog QUIET)

# LibTorch's CMake config puts its flags (the C++ ABI define) in TORCH_CXX_FLAGS
# rather than on the imported target.
separate_arguments(OCLIP_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")

# libvips decodes images. Required for the CLI; the model library builds
# without it (the GPU machine has no Debian packages).
find_package(PkgConfig REQUIRED)
if(PkgConfig_FOUND)
  if(OCLIP_BUILD_CLI)
    pkg_check_modules(VIPS REQUIRED IMPORTED_TARGET vips)
  else()
    pkg_check_modules(VIPS IMPORTED_TARGET vips)
  endif()
endif()

# The server: gRPC + Protobuf (the same libprotobuf 3.21 LibTorch links),
# yaml-cpp for server.yaml.
if(OCLIP_BUILD_SERVER)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(yaml-cpp REQUIRED)
  find_program(OCLIP_PROTOC protoc REQUIRED)
  find_program(OCLIP_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
endif()

# Data sources and the index: libarchive (webdataset tar shards), SQLite
# (metadata), FAISS (which needs OpenMP found first).
if(OCLIP_BUILD_INDEX)
  find_package(LibArchive REQUIRED)
  find_package(SQLite3 REQUIRED)
  find_package(OpenMP REQUIRED)
  find_package(faiss CONFIG REQUIRED)
endif()

if(OCLIP_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
