#!/usr/bin/env bash
# Build the `cave` binary and the container image `cave:local` (or the tag given as the first argument).
#
# The image is FROM scratch, so it needs no registry: this script stages the binary, the shared libraries that
# `ldd` lists for it and the dynamic loader in target/docker/rootfs/, then runs `docker build`.
#
#   scripts/docker-image.sh              # cargo build --release, then build cave:local
#   scripts/docker-image.sh cave:v1      # another tag
#
# Environment:
#   CAVE_BINARY=PATH     use this binary instead of building the release one (the Docker tests pass their
#                        debug build, which they have already compiled)
#   CAVE_IMAGE_STRIP=0   keep the binary's debug info (line tables: ~80 MB instead of ~15 MB)
#
# The image is labelled with a fingerprint of its content; when an image of that tag already has the same
# fingerprint, nothing is rebuilt.
set -euo pipefail

tag=${1:-cave:local}
docker=${DOCKER:-docker}
binary=${CAVE_BINARY:+$(realpath "$CAVE_BINARY")}
cd "$(dirname "$0")/.."

if [ -z "$binary" ]; then
    echo "== cargo build --release" >&2
    # Cargo says where it put the binary (CARGO_TARGET_DIR, .cargo/config.toml, ...).
    binary=$(cargo build --release --bin cave --message-format=json-render-diagnostics \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
fi
[ -n "$binary" ] && [ -x "$binary" ] || { echo "error: no cave executable (${binary:-cargo named none})" >&2; exit 1; }

stage=target/docker
mkdir -p "$stage"
# One build at a time per checkout: they share the staging directory.
exec 9>"$stage/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

rootfs=$stage/rootfs
owned=$stage/owned  # copied with --chown to the node's user
rm -rf "$rootfs" "$owned"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$owned/data"
chmod 0700 "$owned/data"
mkdir "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

if [ "${CAVE_IMAGE_STRIP:-1}" != 0 ] && command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$rootfs/usr/local/bin/cave" "$binary"
else
    cp "$binary" "$rootfs/usr/local/bin/cave"
fi
chmod 0755 "$rootfs/usr/local/bin/cave"

# Every library and the loader, at the path ldd resolved (which is where the loader looks for them).
# ldd prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
libraries=$( (ldd "$binary" || true) | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
for library in $libraries; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
done

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/nonexistent
cave:x:10001:10001:cave:/data:/nonexistent
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
cave:x:10001:
GROUP
# Host names from /etc/hosts, then DNS (Docker's embedded resolver knows the other containers' names).
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"

# The staged tree (contents, modes) and the Dockerfile decide the image.
fingerprint=$( (tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C "$stage" rootfs owned; cat Dockerfile) \
    | sha256sum | cut -c1-16)
current=$("$docker" image inspect --format '{{ index .Config.Labels "cave.fingerprint" }}' "$tag" 2>/dev/null || true)
if [ "$current" = "$fingerprint" ]; then
    echo "== $tag is up to date (fingerprint $fingerprint)" >&2
    exit 0
fi

previous=$("$docker" image inspect --format '{{ .Id }}' "$tag" 2>/dev/null || true)
echo "== docker build -t $tag (libraries: $(echo $libraries))" >&2
"$docker" build --label "cave.fingerprint=$fingerprint" -t "$tag" .
# The image this tag named before is now untagged; remove it unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$("$docker" image inspect --format '{{ .Id }}' "$tag")" ]; then
    "$docker" image rm "$previous" >/dev/null 2>&1 || true
fi
echo "== built $tag; try: docker run --rm $tag --version" >&2
