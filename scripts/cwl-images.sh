#!/usr/bin/env bash
# Local stand-ins for the images the CWL conformance suite names (Docker Hub is out of
# reach): one Debian "bookworm" root file system from Debian packages (debootstrap), with
# bash, coreutils and python3, imported as debian:stable-slim and tagged python:3-slim and
# alpine:latest; bash:4.4 adds what the real one has on top: an ENTRYPOINT that runs bash
# when the first argument is an option (`docker run bash:4.4 -c '...'`). Skips names present.
set -euo pipefail
BASE=debian:stable-slim
have() { docker image inspect "$1" >/dev/null 2>&1; }
built=()
if ! have "$BASE"; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  root=$(mktemp -d /tmp/kran-cwl-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  mirror=${KRAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  debootstrap --variant=minbase --include=python3-minimal,python3 bookworm "$root" "$mirror" >/tmp/kran-debootstrap.log 2>&1 \
    || { tail -20 /tmp/kran-debootstrap.log; exit 1; }
  ln -sf python3 "$root/usr/bin/python"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  built+=("$BASE")
fi
for n in python:3-slim alpine:latest; do have "$n" || { docker tag "$BASE" "$n"; built+=("$n"); }; done
if [ "$(docker image inspect -f '{{json .Config.Entrypoint}}' bash:4.4 2>/dev/null)" != '["docker-entrypoint.sh"]' ]; then
  ctx=$(mktemp -d /tmp/kran-cwl-bash.XXXXXX)
  cat >"$ctx/docker-entrypoint.sh" <<'SH'
#!/bin/bash
set -Eeuo pipefail
# no arguments, or the first one an option: they are bash's (`docker run bash -c 'echo hi'`)
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec bash "$@"
fi
exec "$@"
SH
  chmod 755 "$ctx/docker-entrypoint.sh"
  cid=$(docker create "$BASE")
  docker cp "$ctx/docker-entrypoint.sh" "$cid:/usr/local/bin/docker-entrypoint.sh"
  docker commit -c 'ENTRYPOINT ["docker-entrypoint.sh"]' -c 'CMD ["bash"]' "$cid" bash:4.4 >/dev/null
  docker rm "$cid" >/dev/null
  rm -rf "$ctx"
  built+=(bash:4.4)
fi
[ ${#built[@]} -eq 0 ] && echo "cwl stand-in images present" || echo "built cwl stand-in images: ${built[*]}"
