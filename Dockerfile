# The image of managed nodes (spec.managed.image): Asterisk 22 from Debian's packages plus the
# asterisk-operator binary, which is the pod's init container (`bootstrap`) and agent sidecar
# (`agent`). See docs/image.md (building, pushing, sizes) and docs/controller.md, "Managed nodes".
#
# Two ways to get the binary, chosen by BINARY_SOURCE:
#
#   podman build -t asterisk-operator:0.1.0 .                  # release: cargo build --release
#                                                              # inside rust:1-slim-trixie
#   cargo build --release --locked
#   podman build --build-arg BINARY_SOURCE=host -t asterisk-operator:0.1.0 .
#                                                              # host: the binary you built
#   (BINARY=target/debug/asterisk-operator for a debug build; `docker build` takes the same flags)
#
# Debian sid is the suite that ships Asterisk 22 (22.10.1 when last checked); pass
# --build-arg BASE=docker.io/library/debian:trixie-slim once Asterisk 22 is in that suite, or
# BASE=localhost/… for a base made without a registry (as CI does: docs/image.md).
ARG BASE=docker.io/library/debian:sid-slim
ARG RUST=docker.io/library/rust:1-slim-trixie
ARG BINARY_SOURCE=release

# The release build. Only the files cargo needs are copied (and let through by .dockerignore),
# so an edit to docs or tests does not rebuild it.
FROM ${RUST} AS release
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY examples/two-offices.yaml examples/
# cargo reads every target Cargo.toml names, benches and tests included, before it builds one.
COPY benches benches
COPY tests/*.rs tests/
RUN cargo build --release --locked --bin asterisk-operator \
 && install -D -m 0755 target/release/asterisk-operator /out/asterisk-operator

# A binary built on the host (glibc no newer than sid's, i.e. any Debian or Ubuntu release).
FROM scratch AS host
ARG BINARY=target/release/asterisk-operator
COPY ${BINARY} /out/asterisk-operator

FROM ${BINARY_SOURCE} AS binary

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="asterisk-operator" \
      org.opencontainers.image.description="Asterisk 22 with the asterisk-operator agent and bootstrap: the pod of a managed AsteriskNode" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/asterisk-operator/asterisk-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# The asterisk user first, with the fixed id the pod runs every container as
# (ManagedSettings::run_as); the package's postinst keeps an existing system user. Nothing but
# Asterisk and its modules is installed (no recommends: no editors, no network tools); apt's
# lists go; set-uid/set-gid bits are dropped, as nothing in the pod may gain privileges.
RUN groupadd --system --gid 200 asterisk \
 && useradd --system --uid 200 --gid 200 --home-dir /var/lib/asterisk --no-create-home \
        --shell /usr/sbin/nologin asterisk \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends asterisk asterisk-modules \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && install -d -o asterisk -g asterisk -m 0750 \
        /var/lib/asterisk /var/lib/asterisk/keys /var/spool/asterisk /var/log/asterisk \
        /var/cache/asterisk /run/asterisk \
 && find / -xdev -type f -perm /6000 -exec chmod ug-s {} +
COPY --from=binary /out/asterisk-operator /usr/local/bin/asterisk-operator
USER 200:200
# SIP and IAX2 (the node's spec.sip/spec.iax ports), the agent's gRPC, HTTP and mesh.
EXPOSE 5060/udp 4569/udp 7443/tcp 9090/tcp 7444/tcp 6970/tcp
CMD ["/usr/sbin/asterisk", "-f", "-n", "-C", "/etc/asterisk/asterisk.conf"]
