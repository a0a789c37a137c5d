# syntax=docker/dockerfile:1
# oclip's container images (deploy/README.md says how to build and run them).
#
#   docker build -t oclip:cpu .                                  # CPU, Debian 12
#   docker build -t oclip:cuda --build-arg VARIANT=cuda .        # CUDA
#
# VARIANT=cpu   builds on debian:bookworm-slim from Debian's packages
#               (scripts/install-deps.sh --image), LibTorch 1.13 included.
# VARIANT=cuda  builds on NVIDIA's CUDA image (Ubuntu 24.04, whose Abseil,
#               gRPC and Protobuf are the versions Debian 12 has) against the
#               official LibTorch CUDA distribution (LIBTORCH_URL).
#
# Both end in the same runtime stage: scripts/stage-runtime.sh installs oclip
# into /opt/oclip and lists the OS packages its libraries come from (libraries
# from no package, the official LibTorch's, are bundled in /opt/oclip/lib/oclip);
# the final stage copies /opt/oclip onto a fresh base and apt-installs only
# that list. tests/deploy/runtime_stage_test.sh stages the same layout with the
# same script and serves a model from it, so a broken runtime stage fails CI.
#
# The image: non-root user 10001, entrypoint `oclip`, the model cache
# ($OCLIP_CACHE=/var/cache/oclip) a volume, gRPC on 50051, metrics on 9090.

ARG VARIANT=cpu
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
# The CUDA runtime libraries (cudart, cuBLAS, cuDNN, NCCL) come bundled with
# the official LibTorch, so the runtime base needs only what the NVIDIA
# container toolkit expects.
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.6.0%2Bcu126.zip

# --- Build environments -------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build-env-cpu
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN apt-get update -q \
 && /tmp/install-deps.sh --image \
 && rm -rf /var/lib/apt/lists/*
ENV OCLIP_CMAKE_ARGS=""

FROM ${CUDA_DEVEL_IMAGE} AS build-env-cuda
ARG LIBTORCH_URL
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN apt-get update -q \
 && /tmp/install-deps.sh --image --without-libtorch \
 && apt-get install -y -q --no-install-recommends ca-certificates curl unzip \
 && curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
 && unzip -q /tmp/libtorch.zip -d /opt \
 && rm -f /tmp/libtorch.zip \
 && rm -rf /var/lib/apt/lists/*
# LibTorch's CMake config asks for the GPU architectures (and would probe a GPU,
# which a build has not): Ampere, Ada, Hopper. oclip has no CUDA sources of
# its own; LibTorch's kernels are prebuilt for all of these.
ENV TORCH_CUDA_ARCH_LIST="8.0 8.6 8.9 9.0" \
    OCLIP_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/opt/libtorch/share/cmake"

# --- Build ---------------------------------------------------------------------
FROM build-env-${VARIANT} AS build
WORKDIR /src
COPY . .
# OCLIP_BUILD_TESTS=OFF: the image needs only the executable. No precompiled
# headers: one configuration is built once, ccache has nothing to share.
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOCLIP_BUILD_TESTS=OFF \
      -DOCLIP_USE_CCACHE=OFF ${OCLIP_CMAKE_ARGS} \
 && cmake --build build --target oclip --parallel "$(nproc)" \
 && scripts/stage-runtime.sh build /opt/oclip

# --- Runtime bases ---------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime-cpu

FROM ${CUDA_RUNTIME_IMAGE} AS runtime-cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# --- Runtime ---------------------------------------------------------------------
FROM runtime-${VARIANT} AS runtime
ARG VARIANT
COPY --from=build /opt/oclip /opt/oclip
# Only the runtime libraries: the packages stage-runtime.sh found bin/oclip's
# libraries in (no compilers, no -dev packages). The last line proves the
# binary starts with them.
RUN apt-get update -q \
 && xargs -a /opt/oclip/share/oclip/runtime-packages.txt \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 oclip \
 && useradd --uid 10001 --gid 10001 --home-dir /home/oclip --create-home --shell /usr/sbin/nologin oclip \
 && mkdir -p /var/cache/oclip \
 && chown 10001:10001 /var/cache/oclip \
 && /opt/oclip/bin/oclip serve --help >/dev/null
ENV PATH=/opt/oclip/bin:${PATH} \
    OCLIP_CACHE=/var/cache/oclip
LABEL org.opencontainers.image.title="oclip" \
      org.opencontainers.image.description="OpenCLIP in C++: serve, embed, index and train CLIP models" \
      org.opencontainers.image.variant="${VARIANT}"
VOLUME ["/var/cache/oclip"]
WORKDIR /home/oclip
USER 10001:10001
# 50051: gRPC (oclip.v1.Clip, grpc.health.v1, reflection); 9090: /metrics.
EXPOSE 50051 9090
ENTRYPOINT ["oclip"]
CMD ["--help"]
