# Shared set-up for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Installs what kran needs on a fresh Debian machine (as root) and starts dockerd
# when none answers. Idempotent: a second run only checks.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STARTED_DOCKERD_PID=""

need_debs() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  [ ! -x /usr/bin/python3 ] || /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)  # tests/e2e/test_tes_snakemake.py
  command -v curl >/dev/null || missing+=(curl)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v node >/dev/null || missing+=(nodejs)  # CWL JavaScript expressions
  command -v debootstrap >/dev/null || missing+=(debootstrap)  # CWL stand-in images
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # the store's PostgreSQL tests
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

need_browser() {  # the dashboard's browser tests: Debian's Chromium and its driver (no downloads)
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "== installing Debian packages: chromium chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

need_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import kran, pytest, pytest_timeout" 2>/dev/null \
     || [ "$ROOT/pyproject.toml" -nt "$VENV/.kran-installed" ]; then
    echo "== installing Python dependencies"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" 2>&1 | grep -v '^WARNING: Location' || true
    touch "$VENV/.kran-installed"
  fi
}

need_dockerd() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  echo "== starting dockerd"
  mkdir -p /var/log
  # live-restore: running containers (kran's jobs) survive a restart of the daemon
  local flags=(--live-restore)
  grep -qs '"live-restore"' /etc/docker/daemon.json && flags=()  # set there: a flag too would conflict
  dockerd "${flags[@]}" >/var/log/kran-dockerd.log 2>&1 &
  STARTED_DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "dockerd did not start; see /var/log/kran-dockerd.log" >&2
  tail -20 /var/log/kran-dockerd.log >&2
  exit 1
}

stop_started_dockerd() {
  if [ -n "$STARTED_DOCKERD_PID" ]; then
    kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
    wait "$STARTED_DOCKERD_PID" 2>/dev/null || true
  fi
}

build_busybox_image() {
  # Docker Hub is unreachable: a tiny image from Debian's static busybox.
  if ! docker image inspect kran-demo/busybox:latest >/dev/null 2>&1; then
    local ctx
    ctx=$(mktemp -d)
    cp /bin/busybox "$ctx/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$ctx/Dockerfile"
    docker build -q -t kran-demo/busybox:latest "$ctx" >/dev/null 2>&1
    rm -rf "$ctx"
  fi
}
