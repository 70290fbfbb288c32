#!/usr/bin/env bash
# Brings up three kiln-serve replicas behind HAProxy (docker/compose.yaml) over the model
# repository KILN_MODELS (default: models/, as scripts/run.sh fills it), building the
# images first when missing, waits until the balancer answers, and prints its address.
# KILN_PORT picks the port (default 8080). Stop with:
#   docker-compose -f docker/compose.yaml down
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export KILN_MODELS="$(cd "${KILN_MODELS:-models}" && pwd)"
export KILN_PORT="${KILN_PORT:-8080}"
ls "$KILN_MODELS"/*/[0-9]*/manifest.json >/dev/null 2>&1 \
  || { echo "no model in $KILN_MODELS (<model>/<version>/ packages): run scripts/run.sh first, or set KILN_MODELS" >&2; exit 2; }
for image in kiln-serve:latest kiln-lb:latest; do
  docker image inspect "$image" >/dev/null 2>&1 || { bash docker/build.sh; break; }
done
docker-compose -f docker/compose.yaml up -d
URL="http://127.0.0.1:$KILN_PORT"
for _ in $(seq 1 300); do
  if curl -sf -o /dev/null "$URL/v2/health/ready"; then
    echo "kiln-serve: 3 replicas behind HAProxy at $URL (stats: http://127.0.0.1:${KILN_STATS_PORT:-8404}/stats)"
    exit 0
  fi
  sleep 0.2
done
echo "the balancer at $URL did not become ready; see: docker-compose -f docker/compose.yaml logs" >&2
exit 1
