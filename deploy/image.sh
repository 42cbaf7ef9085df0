#!/usr/bin/env bash
# Builds the container image `keelson:local` from a keelson binary already built on this host,
# with nothing downloaded: the binary, the shared libraries `ldd` names for it (Debian 12's
# librocksdb7.8 and its codecs, libstdc++, libc), static busybox for the shell the compose
# files' one-shot `init` scripts run, and the CA bundle. `docker import` turns that tree into
# an image, so no base image and no registry are needed (the machine this was written on has
# none). With network access, the Dockerfile in deploy/docker-compose.yml's header is the
# usual alternative.
#
# Usage: deploy/image.sh [TAG]            (default keelson:local)
#   KEELSON_BIN   the binary (default target/release/keelson or $CARGO_TARGET_DIR/release/keelson)
#   DOCKER_HOST   the engine to import into, as for the docker CLI
# Needs: docker (CLI), ldd, tar, and /bin/busybox (Debian package busybox-static).
set -euo pipefail

tag=${1:-keelson:local}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${KEELSON_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/keelson}
[ -x "$bin" ] || { echo "image.sh: no keelson binary at $bin (cargo build --release -p keelson)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "image.sh: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,usr/local/bin,etc/ssl/certs,tmp,data}
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/keelson"
cp /bin/busybox "$root/bin/busybox"
for applet in sh sleep cat echo grep test true false ls mkdir; do
  ln -s busybox "$root/bin/$applet"
done
# The loader and every library the binary links, at the paths the loader looks them up.
ldd "$bin" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/bin' \
  --change 'ENV KEELSON_DATA_DIR=/data' \
  --change 'WORKDIR /' \
  --change 'ENTRYPOINT []' \
  --change 'CMD ["keelson", "serve"]' \
  - "$tag" >/dev/null
echo "built $tag from $bin"
