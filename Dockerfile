# syntax=docker/dockerfile:1
# Build: the same command as the README's, plus the sample receiver.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin verriflo-relay --example receiver

# Run: a small image, a non-root user, one data volume.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/relay relay \
 && mkdir -p /data && chown relay:relay /data
COPY --from=build /src/target/release/verriflo-relay /usr/local/bin/verriflo-relay
COPY --from=build /src/target/release/examples/receiver /usr/local/bin/verriflo-receiver
USER relay
ENV RELAY_DATA_DIR=/data \
    RELAY_LISTEN=0.0.0.0:8080 \
    RELAY_URL=http://127.0.0.1:8080
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["verriflo-relay", "healthcheck"]
ENTRYPOINT ["verriflo-relay"]
CMD ["serve"]
