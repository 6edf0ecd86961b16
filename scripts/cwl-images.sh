#!/usr/bin/env bash
# Local stand-ins for the images the CWL conformance suite names (Docker Hub is out of
# reach): one Debian "bookworm" root file system from Debian packages (debootstrap), with
# bash, coreutils and python3, imported and tagged with each name. Skips names present.
set -euo pipefail
NAMES=(debian:stable-slim python:3-slim bash:4.4 alpine:latest)
missing=()
for n in "${NAMES[@]}"; do docker image inspect "$n" >/dev/null 2>&1 || missing+=("$n"); done
[ ${#missing[@]} -eq 0 ] && { echo "cwl stand-in images present"; exit 0; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
root=$(mktemp -d /tmp/kran-cwl-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
mirror=${KRAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
debootstrap --variant=minbase --include=python3-minimal,python3 bookworm "$root" "$mirror" >/tmp/kran-debootstrap.log 2>&1 \
  || { tail -20 /tmp/kran-debootstrap.log; exit 1; }
ln -sf python3 "$root/usr/bin/python"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "${missing[0]}" >/dev/null
for n in "${missing[@]:1}"; do docker tag "${missing[0]}" "$n"; done
echo "built cwl stand-in images: ${missing[*]}"
