# Build stage, with the same locked dependencies as CI: they are compiled in a
# layer of their own, so a change to the sources does not rebuild them.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY config config
COPY migrations migrations
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Runtime stage: the binary alone (TLS roots are built in), as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/produktly --create-home produktly
COPY --from=build /src/target/release/produktly-segment /usr/local/bin/produktly-segment
USER produktly
WORKDIR /var/lib/produktly
ENV PRODUKTLY_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The SQLite default keeps its database and generated secrets here.
VOLUME ["/var/lib/produktly/data"]
# Liveness: the binary asks its own /healthz (the image has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["produktly-segment", "healthcheck"]
ENTRYPOINT ["produktly-segment"]
CMD ["serve"]
