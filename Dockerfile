# One image per FTGO binary, for kind or any cluster:
#
#   docker build --build-arg BIN=order-service -t ghcr.io/ftgo-rs/order-service:0.1.0 .
#
# BIN is one of: consumer-service kitchen-service accounting-service order-service
# orchestrator-service api-gateway ftgo-operator (`just images` builds them all).
# Protobuf is compiled by protox, so the build needs no protoc; no sqlx query is checked at
# compile time, so it needs no database either.

FROM rust:1.95-bookworm AS build
ARG BIN
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    test -n "${BIN}" && \
    cargo build --locked --release --bin "${BIN}" && \
    cp "target/release/${BIN}" /ftgo

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /ftgo /usr/local/bin/ftgo
# No root in the container: a fixed unprivileged uid.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ftgo"]
