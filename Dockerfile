# straddle-webhook image: docker build -t straddle-webhook .
# Multi-stage: the pinned toolchain builds the release binary; the final
# image is distroless (glibc, CA certificates, no shell), running as the
# non-root user 65532 with nothing to write outside its mounted volumes
# (the chart mounts emptyDirs for --cache-dir and self-managed certificates,
# so the root filesystem can be read-only).

# Keep in step with rust-toolchain.toml.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The toolchain of rust-toolchain.toml (rustup >= 1.28 installs it, with
# its components and the wasm32 target of the policy guest, from the file).
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add wasm32-unknown-unknown
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p straddle-webhook \
    && install -D -m 0755 target/release/straddle-webhook /out/straddle-webhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/straddle-webhook /usr/local/bin/straddle-webhook
USER 65532:65532
# 8443: HTTPS (/mutate, /healthz, /readyz, /metrics); 8080: the chart's
# --probe-listen (plain HTTP probes and metrics).
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/straddle-webhook"]
