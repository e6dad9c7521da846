# The image a managed node's StatefulSet runs (spec.managed.image): Asterisk 22 from Debian's
# packages plus the asterisk-operator release binary, which serves as the pod's init container
# (`bootstrap`) and agent sidecar (`agent`). See docs/controller.md, "Managed nodes".
#
#   docker build -t asterisk-operator:0.1.0 .
#
# Debian sid is where the test-bed installs Asterisk 22 from (22.10.1 when last checked); pass
# --build-arg DEBIAN=trixie-slim once Asterisk 22 is in that suite.
ARG DEBIAN=sid-slim

FROM rust:1-slim-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin asterisk-operator

FROM debian:${DEBIAN}
# The asterisk user first, with the fixed id the StatefulSet runs every container as
# (ManagedSettings::run_as); the package's postinst keeps an existing system user.
RUN groupadd --system --gid 200 asterisk \
 && useradd --system --uid 200 --gid 200 --home-dir /var/lib/asterisk --no-create-home \
        --shell /usr/sbin/nologin asterisk \
 && apt-get update \
 && apt-get install -y --no-install-recommends asterisk asterisk-modules \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o asterisk -g asterisk -m 0750 \
        /var/lib/asterisk /var/lib/asterisk/keys /var/spool/asterisk /var/log/asterisk \
        /var/cache/asterisk /run/asterisk
COPY --from=build /src/target/release/asterisk-operator /usr/local/bin/asterisk-operator
USER 200:200
# SIP and IAX2 (the node's spec.sip/spec.iax ports), the agent's gRPC and HTTP.
EXPOSE 5060/udp 4569/udp 7443/tcp 9090/tcp
CMD ["/usr/sbin/asterisk", "-f", "-n", "-C", "/etc/asterisk/asterisk.conf"]
