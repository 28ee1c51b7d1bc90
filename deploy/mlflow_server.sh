#!/usr/bin/env bash
# The MLflow tracking server of a Ray cluster, run on the head node (cluster.yaml starts it).
#
#   bash deploy/mlflow_server.sh start | stop | status
#
# Backend store (runs, registry): $MLFLOW_BACKEND_STORE_URI when set; else the SecureString
# SSM parameter named by $RESULIC_MLFLOW_DB_PARAMETER (default /resulic/mlflow-backend-store-uri),
# read with the node's instance profile; else SQLite on the head's local disk (one writer: this
# server; fine for one person, lost with the head). The URI, which may hold a password, is never
# written to a file or printed.
# Artifacts: $RESULIC_MLFLOW_ARTIFACTS (default s3://my-bucket/resulic/mlartifacts), proxied by
# the server (--artifacts-destination), so workers need only the tracking URI.
set -euo pipefail

PORT="${RESULIC_MLFLOW_PORT:-5000}"
STATE="${RESULIC_MLFLOW_HOME:-$HOME/mlflow}"
ARTIFACTS="${RESULIC_MLFLOW_ARTIFACTS:-s3://my-bucket/resulic/mlartifacts}"
PARAMETER="${RESULIC_MLFLOW_DB_PARAMETER:-/resulic/mlflow-backend-store-uri}"
mkdir -p "$STATE"

backend_store() {
  if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
    printf '%s' "$MLFLOW_BACKEND_STORE_URI"
    return
  fi
  local uri
  uri="$(python - "$PARAMETER" <<'PY' 2>/dev/null || true
import sys
import boto3
print(boto3.client("ssm").get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"], end="")
PY
)"
  if [[ -n "$uri" ]]; then printf '%s' "$uri"; else printf 'sqlite:///%s/mlflow.db' "$STATE"; fi
}

case "${1:-start}" in
  start)
    if [[ -f "$STATE/server.pid" ]] && kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null; then
      echo "mlflow server already running (pid $(cat "$STATE/server.pid"))"; exit 0
    fi
    uri="$(backend_store)"
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
