# Needs BuildKit (Docker 23 and later by default; DOCKER_BUILDKIT=1 before):
# only the stages the image needs are built.
#
#   docker build -t produktly-segment .
#       compiles the service in the `build` stage (rust image);
#   docker build -t produktly-segment --build-arg BINARY=prebuilt -f Dockerfile DIR
#       takes a release binary built beforehand, DIR/produktly-segment, instead
#       (what scripts/container-test.sh does where no Rust image can be pulled).
ARG BINARY=build
ARG RUNTIME_BASE=debian:bookworm-slim

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
COPY clients/browser/dist clients/browser/dist
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && cp target/release/produktly-segment /produktly-segment

# Or a binary built beforehand, the only file of the build context.
FROM scratch AS prebuilt
COPY produktly-segment /produktly-segment

FROM ${BINARY} AS binary

# Runtime stage: the binary alone (TLS roots are built in), as a non-root user.
FROM ${RUNTIME_BASE}
# The data folder exists in the image and belongs to the service's user:
# Docker copies it, ownership included, into a new volume mounted there
# (anonymous or named), so the SQLite default can write its database and
# generated secrets.
RUN useradd --system --uid 10001 --home-dir /var/lib/produktly --create-home produktly \
    && mkdir -p /var/lib/produktly/data && chown produktly:produktly /var/lib/produktly/data
COPY --from=binary /produktly-segment /usr/local/bin/produktly-segment
USER produktly
WORKDIR /var/lib/produktly
ENV PRODUKTLY_LISTEN=0.0.0.0:8080
# Client connections are bounded by the open-file limit, which the service
# raises to the container's hard limit at start (less 256 for itself); give
# the container a high one: `docker run --ulimit nofile=65536:65536`.
# `docker stop` waits 10 s before SIGKILL: drain within 8 s of SIGTERM.
ENV PRODUKTLY_SHUTDOWN_TIMEOUT_MS=8000
EXPOSE 8080
# The SQLite default keeps its database and generated secrets here.
VOLUME ["/var/lib/produktly/data"]
# Liveness: the binary asks its own /healthz (the image has no curl).
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=3 \
    CMD ["produktly-segment", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["produktly-segment"]
CMD ["serve"]
