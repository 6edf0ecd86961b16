#!/usr/bin/env bash
# The whole CWL v1.2 conformance suite through kran-cwl-runner (outside CI; CI runs the
# `required` tests in tests/e2e/test_cwl_conformance.py). Starts its own kran server with
# its default settings (the runner uploads each run's documents and files; SHARED=1: the
# suite's dir a shared root instead, read by path), writes JUnit XML and badges to $OUT.
#   bash scripts/conformance.sh [SUITE_DIR] [extra cwltest args, e.g. --tags required]
# SUITE_DIR: a clone of https://github.com/common-workflow-language/cwl-v1.2 (default
# ../shared/cwl-v1.2-conformance).
source "$(dirname "$0")/env.sh"
need_debs
need_venv
need_dockerd
trap stop_started_dockerd EXIT
SUITE="$(realpath "${1:-$ROOT/../shared/cwl-v1.2-conformance}")"; shift || true
OUT="${OUT:-$ROOT/conformance}"
JOBS="${JOBS:-4}"
bash "$ROOT/scripts/cwl-images.sh"
WORK=$(mktemp -d /tmp/kran-conformance.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ROOTS=""; [ "${SHARED:-0}" = 1 ] && ROOTS="$SUITE"
HOME="$WORK" KRAN_FILES_FILE_URL_ROOTS="$ROOTS" "$VENV/bin/kran" serve --data-dir "$WORK/data" --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"; stop_started_dockerd' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null && break; sleep 0.25; done
export KRAN_URL="http://127.0.0.1:$PORT" KRAN_CLIENT_CONFIG="$WORK/.config/kran/client.toml" PATH="$VENV/bin:$PATH"
rm -rf "$OUT/badges"; mkdir -p "$OUT"   # cwltest makes the badge dir itself
cd "$SUITE"
start=$(date +%s)
cwltest --test conformance_tests.yaml --tool kran-cwl-runner -j "$JOBS" \
  --junit-xml "$OUT/conformance.xml" --badgedir "$OUT/badges" "$@" >"$OUT/conformance.log" 2>&1 && rc=0 || rc=$?
grep -E "^Test [0-9]+ failed|tests passed|failures" "$OUT/conformance.log" || true
echo "wall time: $(( $(date +%s) - start )) s; JUnit: $OUT/conformance.xml; badges: $OUT/badges"
exit $rc
