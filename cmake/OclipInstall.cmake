# What `cmake --install` puts under the prefix: the runtime layout that
# scripts/stage-runtime.sh stages and the Dockerfile's final stage copies.
#
#   bin/oclip                                the executable (RUNPATH
#                                            $ORIGIN/../lib/oclip: libraries
#                                            no OS package provides, e.g. the
#                                            official LibTorch, are bundled there)
#   share/oclip/server.example.yaml          every server.yaml key, documented
#   share/oclip/proto/                       the API (oclip/v1/clip.proto, and
#                                            grpc/health/v1/health.proto), for
#                                            clients without reflection
#   share/oclip/examples/python/             the grpcio client example (its
#                                            generate_stubs.sh finds ../../proto)

set_target_properties(oclip PROPERTIES INSTALL_RPATH "$ORIGIN/../lib/oclip")
install(FILES ${PROJECT_SOURCE_DIR}/deploy/server.example.yaml DESTINATION share/oclip)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/ DESTINATION share/oclip/proto
        FILES_MATCHING PATTERN "*.proto")
install(FILES ${PROJECT_SOURCE_DIR}/examples/python/README.md
              ${PROJECT_SOURCE_DIR}/examples/python/oclip_client.py
        DESTINATION share/oclip/examples/python)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/examples/python/generate_stubs.sh
        DESTINATION share/oclip/examples/python)
