# A runtime stage with a typo'd instruction and a bad port.
# expect: Unknown instruction: ENTRYPIONT
FROM debian:bookworm-slim AS runtime
COPY --from=build /opt/oclip /opt/oclip
USER 10001:10001
EXPOSE 50051 metrics
ENTRYPIONT ["oclip"]
