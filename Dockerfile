# Cave as a container image that builds with no registry: FROM scratch, holding only the `cave` binary, the
# shared libraries `ldd` says it links (glibc, libm, libgcc_s), the dynamic loader and a few files under /etc.
# There is no shell, no curl and no package manager in it; the health check is `cave healthcheck`.
#
# Build it with scripts/docker-image.sh, which compiles the release binary and stages these files in
# target/docker/rootfs/ (the only part of the repository the .dockerignore lets into the build context).

FROM scratch

# Binary, libraries, loader, /etc/{passwd,group,nsswitch.conf} and a world-writable /tmp (SQLite's temp
# files), owned by root and read-only to the node.
COPY target/docker/rootfs/ /
# The data directory (mode 0700), owned by the unprivileged user. A fresh named volume mounted on /data
# takes this owner and mode, so the node can write to it without running as root.
COPY --chown=10001:10001 target/docker/owned/ /

ENV CAVE_MODE=prod \
    CAVE_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# 2000: replication (gRPC) between nodes; 2001: REST API and web UI.
EXPOSE 2000 2001

# /healthz on the node's own http_addr (CAVE_HTTP_ADDR, default 0.0.0.0:2001, probed on 127.0.0.1), over HTTPS
# when CAVE_TLS_CERT is set.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/cave", "healthcheck", "--timeout", "3s"]

ENTRYPOINT ["/usr/local/bin/cave"]
