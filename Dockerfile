# qlik-gateway container image.
#
#   docker build -t qlik-gateway .                      # the gateway (default target: runtime)
#   docker build -t qlik-sim --target qlik-sim .        # the simulated Qlik, for deploy/compose only
#
# The builder is Debian bookworm, like the runtime image, so the binaries link against the same
# glibc and MIT Kerberos libraries they find at run time. The gateway is built with the `kerberos`
# feature (Windows sign-in, auth.provider = "negotiate"); the other providers do not need it, but
# one image serves every configuration. It is built without the default `demo` feature: the
# production binary carries no simulated Qlik (qlik-sim is its own image, for deploy/compose).

# The base images. Build arguments so that a site with its own registry, or scripts/container-test.sh
# without any registry, can name other images built from the same Debian release.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# Debian packages are not pinned to versions: bookworm's point releases replace them, and the
# security updates are what we want (hadolint DL3008).
# libkrb5-dev + libclang-dev: the GSSAPI binding (bindgen); pkg-config finds krb5-gssapi.
# curl + python3: the PGO training load (bench/pgo-train.sh), in this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libkrb5-dev libclang-dev pkg-config curl python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the two binaries are built from (see .dockerignore for what never enters the context).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY qlik-sim/Cargo.toml ./qlik-sim/Cargo.toml
COPY qlik-sim/src ./qlik-sim/src
# What the profile-guided build of the gateway trains with: the load generator and the load.
COPY bench/common.sh bench/pgo-train.sh ./bench/
COPY bench/loadgen/Cargo.toml bench/loadgen/Cargo.lock ./bench/loadgen/
COPY bench/loadgen/src ./bench/loadgen/src
COPY scripts/build-release.sh ./scripts/
# PGO=0: the plain release build (LTO only), about a third of the build time; the gateway then
# spends about a quarter more instructions per proxied request (BENCHMARKS.md, "Build: LTO and PGO").
ARG PGO=1
# The registry and target caches persist across builds (BuildKit, buildah); the binaries are copied
# out of the cache mount in the same step. Stripped there: the release profile keeps line tables for
# backtraces (105 MB), which an image has no use for (17 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p qlik-sim \
 && PGO=$PGO LOCKED=1 scripts/build-release.sh --locked --no-default-features --features kerberos \
 && mkdir -p /out \
 && cp target/release/qlik-gateway target/release/qlik-sim /out/ \
 && strip /out/qlik-gateway /out/qlik-sim

# ---------------------------------------------------------------------------------------------
# Shared base of the two run-time images: no compilers, no shell tools beyond Debian's base.
FROM ${DEBIAN_IMAGE} AS base
# ca-certificates: the system roots (OIDC IdPs, rediss://). libgssapi-krb5-2: MIT GSSAPI for the
# kerberos feature (it pulls libkrb5-3, libk5crypto3, libkrb5support0, libcom-err2). No krb5-user:
# the gateway needs no /etc/krb5.conf and no kinit.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgssapi-krb5-2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 qlik-gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/qlik-gateway \
      --no-create-home --shell /usr/sbin/nologin qlik-gateway \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/qlik-gateway \
 && install -d -m 0755 /etc/qlik-gateway

# ---------------------------------------------------------------------------------------------
# The simulated Qlik (QPS API, virtual proxy, engine websocket) for deploy/compose. Not for
# production: it is a test double.
FROM base AS qlik-sim
COPY --from=builder /out/qlik-sim /usr/local/bin/qlik-sim
RUN install -d -o 10001 -g 10001 -m 0755 /var/lib/qlik-sim
USER 10001:10001
ENTRYPOINT ["qlik-sim"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
FROM base AS runtime
COPY --from=builder /out/qlik-gateway /usr/local/bin/qlik-gateway
COPY config/qlik-gateway.example.toml /usr/share/doc/qlik-gateway/qlik-gateway.example.toml
# The configuration is mounted at /etc/qlik-gateway (a ConfigMap, a bind mount), secrets beside it.
# Any key can also be set from the environment: QLIK_GATEWAY__SECTION__KEY.
# Kerberos: the replay cache (MIT's default is /var/tmp) goes to the gateway's own directory, and the
# private keytab copy to $TMPDIR. With a read-only root file system, mount writable volumes there:
#   docker run --read-only --tmpfs /tmp --tmpfs /var/lib/qlik-gateway:uid=10001,gid=10001 …
ENV KRB5RCACHEDIR=/var/lib/qlik-gateway \
    TMPDIR=/tmp
USER 10001:10001
WORKDIR /var/lib/qlik-gateway
# The conventional plain-HTTP port (TLS terminated by the load balancer or ingress): set
# server.listen = "0.0.0.0:8080" in the configuration.
EXPOSE 8080
# /_gateway/healthz over plain HTTP with bash's /dev/tcp (no curl in the image). It assumes the
# listener is plain HTTP on $QLIK_GATEWAY_HEALTH_PORT (default 8080); with TLS on the listener, put the
# port of server.admin_listen (plain HTTP) there, or override HEALTHCHECK. Kubernetes ignores
# HEALTHCHECK and uses the probes in deploy/kubernetes instead.
ENV QLIK_GATEWAY_HEALTH_PORT=8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${QLIK_GATEWAY_HEALTH_PORT} && printf 'GET /_gateway/healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# SIGTERM drains (server.drain_timeout, 20 s by default): give `docker stop -t` at least that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["qlik-gateway"]
CMD ["--config", "/etc/qlik-gateway/qlik-gateway.toml"]
