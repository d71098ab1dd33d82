# syntax=docker/dockerfile:1
# costd's image: a release build, then only the binary on distroless (glibc, CA certificates, no shell).
#   docker build --build-arg COSTD_GIT_REVISION=$(git rev-parse --short=12 HEAD) -t costd:0.1.0 .
# .git is not in the build context, so `costd --version` learns the revision from this argument.

# bookworm, like the runtime's debian12: the binary needs the glibc it was linked against, or older.
FROM rust:1.95-bookworm AS build
ARG COSTD_GIT_REVISION=unknown
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin costd \
    && install -D target/release/costd /out/costd

FROM gcr.io/distroless/cc-debian12:nonroot
ARG COSTD_GIT_REVISION=unknown
LABEL org.opencontainers.image.title="costd" \
      org.opencontainers.image.revision="${COSTD_GIT_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/costd /usr/local/bin/costd
# distroless "nonroot"; the Helm chart's securityContext runs as the same UID and GID.
USER 65532:65532
# gRPC (server.listen) and Prometheus /metrics (metrics.listen), costd's defaults.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/costd"]
CMD ["serve"]
