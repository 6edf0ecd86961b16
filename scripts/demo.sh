#!/usr/bin/env bash
# Bring up the embedded kran server (SQLite + local engine) and run jobs through it.
# Leaves the server running; prints how to use and stop it.
source "$(dirname "$0")/env.sh"
need_debs
need_venv
need_dockerd
build_busybox_image
DATA="${KRAN_DEMO_DIR:-$ROOT/.kran-demo}"
PORT="${KRAN_DEMO_PORT:-9090}"
export KRAN_URL="http://127.0.0.1:$PORT"
KRAN="$VENV/bin/kran"
if ! curl -sf "$KRAN_URL/ping" >/dev/null 2>&1; then
  mkdir -p "$DATA"
  echo "== starting kran serve on $KRAN_URL (data in $DATA, log in $DATA/server.log)"
  nohup "$KRAN" serve --data-dir "$DATA" --port "$PORT" >"$DATA/server.log" 2>&1 &
  echo $! >"$DATA/server.pid"
  for _ in $(seq 1 60); do curl -sf "$KRAN_URL/ping" >/dev/null 2>&1 && break; sleep 0.25; done
fi
# The admin's client config: ~/.config/kran/client.toml, or beside the data dir when that
# file already existed (from another kran server) at the first start.
if [ -f "$DATA/client.toml" ]; then export KRAN_CLIENT_CONFIG="$DATA/client.toml"; fi
"$KRAN" status
echo
echo '== kran run -- sh -c "echo hello from a host process; echo KRAN_CPUS=\$KRAN_CPUS"'
"$KRAN" run --cpus 1 -- sh -c 'echo hello from a host process; echo KRAN_CPUS=$KRAN_CPUS'
echo
echo '== kran run --image kran-demo/busybox --cpus 0.5-1 --mem 64 -- sh -c "..."'
"$KRAN" run --image kran-demo/busybox --cpus 0.5-1 --mem 64 -- sh -c 'echo hello from a container; echo granted $KRAN_CPUS cpus $KRAN_MEM_MB MiB > result.txt; cat result.txt'
echo
"$KRAN" jobs --limit 5
echo
cat <<MSG
kran is running (pid $(cat "$DATA/server.pid" 2>/dev/null || echo '?')). Try:
  export KRAN_URL=$KRAN_URL PATH=$VENV/bin:\$PATH ${KRAN_CLIENT_CONFIG:+KRAN_CLIENT_CONFIG=$KRAN_CLIENT_CONFIG}
  kran submit --sh 'sleep 5; echo done'   kran jobs   kran logs -f ID   kran files ID
The web dashboard: $KRAN_URL/ui/  (sign in with the link \`kran ui-link\` prints)
Stop it with: kill \$(cat $DATA/server.pid)
MSG
