# ringway container image.
#
#   docker build -t ringway .
#   docker run --rm -p 8080:8080 --ulimit nofile=1048576:1048576 \
#     -v "$PWD/ringway.toml:/etc/ringway/ringway.toml:ro" ringway
#
# The config must bind 0.0.0.0 (or [::]) to be reachable from outside the
# container. io_uring inside containers, file descriptors and Kubernetes:
# docs/deployment.md ("Containers") and deploy/kubernetes/.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, against placeholder sources: this layer is rebuilt only
# when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
# The patched monoio (docs/architecture.md, "The monoio patch").
COPY vendor vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && echo '//! placeholder for the dependency layer' > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# Then the crate itself. src/main.rs embeds examples/seed.toml (`ringway demo`).
COPY src src
COPY examples/seed.toml examples/seed.toml
# COPY keeps the files' modification times, which may be older than the
# placeholder build above: touch the crate roots so cargo rebuilds the crate.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/ringway /usr/local/bin/ringway

FROM debian:bookworm-slim
# ca-certificates: the system roots that upstream TLS verifies against when
# an upstream's `tls` names no `ca`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ringway \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ringway \
 && mkdir -p /etc/ringway
COPY --from=build /usr/local/bin/ringway /usr/local/bin/ringway
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# The seed's public (8080) and internal (8081) listeners, and the admin API
# port that deploy/kubernetes/configmap.yaml binds (9901).
EXPOSE 8080 8081 9901
# No HEALTHCHECK: the orchestrator probes GET /health on the admin listener.
ENTRYPOINT ["ringway"]
CMD ["--config", "/etc/ringway/ringway.toml"]
