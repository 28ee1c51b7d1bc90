#!/usr/bin/env bash
# The MLflow tracking server of a Ray cluster, run on the head node (cluster.yaml starts it).
#
#   bash deploy/mlflow_server.sh start | stop | status
#
# Backend store (runs, registry): $MLFLOW_BACKEND_STORE_URI when set; else the SecureString SSM
# parameter named by $RESULIC_MLFLOW_DB_PARAMETER (default /resulic/mlflow-backend-store-uri),
# read with the node's instance profile. A failed read stops the script with an error: it never
# falls back to a SQLite file on its own, since runs logged there would vanish with the head
# while everyone believed them in the database. For a one-person trial store on the head's disk,
# ask for it: MLFLOW_BACKEND_STORE_URI=sqlite:///$HOME/mlflow/mlflow.db. The URI, which may hold a
# password, is never written to a file or printed.
# Artifacts: $RESULIC_MLFLOW_ARTIFACTS (required, e.g. s3://<bucket>/resulic/mlartifacts; cluster.yaml
# sets it), proxied by the server (--artifacts-destination), so workers need only the tracking URI.
# Allowed hosts: MLflow 3's default (localhost and private IPs) already accepts the nodes, which
# reach the server at the head's private IP; no --allowed-hosts is needed here.
set -euo pipefail

PORT="${RESULIC_MLFLOW_PORT:-5000}"
STATE="${RESULIC_MLFLOW_HOME:-$HOME/mlflow}"
PARAMETER="${RESULIC_MLFLOW_DB_PARAMETER:-/resulic/mlflow-backend-store-uri}"

fail() { echo "mlflow_server.sh: $*" >&2; exit 1; }

backend_store() {
  if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
    printf '%s' "$MLFLOW_BACKEND_STORE_URI"
    return
  fi
  local uri errors reason
  errors="$(mktemp)"
  uri="$(python - "$PARAMETER" 2>"$errors" <<'PY'
import sys

try:
    import boto3

    value = boto3.client("ssm").get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"]
except Exception as exc:  # one line for the shell's message (the value is never part of it)
    sys.exit(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}")
print(value, end="")
PY
)" || true
  reason="$(tail -n 1 "$errors")"
  rm -f "$errors"
  [[ -n "$uri" ]] || fail "no backend store: MLFLOW_BACKEND_STORE_URI is unset and SSM parameter $PARAMETER" \
    "could not be read (${reason:-empty value}); set MLFLOW_BACKEND_STORE_URI (sqlite:///$STATE/mlflow.db" \
    "for a one-person store on this disk) or give this node ssm:GetParameter on $PARAMETER"
  printf '%s' "$uri"
}

case "${1:-start}" in
  start)
    mkdir -p "$STATE"
    if [[ -f "$STATE/server.pid" ]] && kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null; then
      echo "mlflow server already running (pid $(cat "$STATE/server.pid"))"; exit 0
    fi
    ARTIFACTS="${RESULIC_MLFLOW_ARTIFACTS:-}"
    [[ -n "$ARTIFACTS" ]] || fail "RESULIC_MLFLOW_ARTIFACTS is unset: name the artifact store" \
      "(e.g. s3://<bucket>/resulic/mlartifacts; cluster.yaml sets it in head_start_ray_commands)"
    uri="$(backend_store)" || exit 1
    echo "mlflow backend store: ${uri%%:*} (the URI itself is not printed)"
    workers=4
    [[ "$uri" == sqlite:* ]] && workers=1   # one SQLite writer ("database is locked", pain point 20)
    MLFLOW_BACKEND_STORE_URI="$uri" \
      nohup bash -c 'exec mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
        --artifacts-destination "$0" --serve-artifacts --host 0.0.0.0 --port "$1" --workers "$2"' \
        "$ARTIFACTS" "$PORT" "$workers" >"$STATE/server.log" 2>&1 &
    echo $! >"$STATE/server.pid"
    echo "mlflow server on 0.0.0.0:$PORT (pid $!, log $STATE/server.log, artifacts $ARTIFACTS)"
    ;;
  stop)
    [[ -f "$STATE/server.pid" ]] && kill "$(cat "$STATE/server.pid")" && rm -f "$STATE/server.pid"
    ;;
  status)
    curl -fsS "http://127.0.0.1:$PORT/health" && echo
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2; exit 2
    ;;
esac
