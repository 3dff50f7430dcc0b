# Build: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schema ./schema
COPY benches ./benches
RUN cargo build --release --locked --bin edgedesk

# Run: a small image, a non-root user, data on a volume.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data edgedesk \
    && mkdir -p /data && chown edgedesk /data
COPY --from=build /src/target/release/edgedesk /usr/local/bin/edgedesk
USER edgedesk
ENV EDGEDESK_DATA_DIR=/data EDGEDESK_LISTEN=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 200 <&3"]
ENTRYPOINT ["edgedesk"]
CMD ["serve"]
