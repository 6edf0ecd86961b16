#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine (root): installs Docker, busybox and
# the Python dependencies if missing, starts dockerd if none runs (and stops it after).
source "$(dirname "$0")/env.sh"
need_debs
need_browser
need_venv
need_dockerd
trap stop_started_dockerd EXIT
cd "$ROOT"
bash scripts/cwl-images.sh  # the images the CWL conformance tests name, from Debian packages
# each test's server is a new process: with PYTHONDONTWRITEBYTECODE set (as on our machines)
# it compiled kran's 200 modules again at every start (0.3 s); compiled once here instead
"$VENV/bin/python" -m compileall -q src >/dev/null
"$VENV/bin/python" -m pytest "$@"
