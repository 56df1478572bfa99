#!/usr/bin/env bash
# Development clusters only: create the secrets the chart references, with throwaway keys, the
# development issuer's JWKS and database URLs for the dev-only in-cluster PostgreSQL servers.
# Production secrets come from your secret manager (External Secrets, Vault, sealed-secrets).
set -euo pipefail
cd "$(dirname "$0")/.."
RELEASE=${RELEASE:-kiban}
CORE=${CORE_NS:-kiban-core}
INFO=${INFO_NS:-kiban-info}
# Keys and the dev issuer stay in .kiban/cluster (git-ignored) so you can mint tokens later:
#   KIBAN_STATE_DIR=.kiban/cluster/state uv run kiban token --sub operator:me --scope admin
WORK=.kiban/cluster; mkdir -p "$WORK"; chmod 700 "$WORK"
uv run --frozen python - "$WORK" <<'PY'
import base64, json, secrets, sys
from pathlib import Path
from kiban_common.crypto import SealingKeyPair
from kiban_common.devstate import dev_issuer
work = Path(sys.argv[1])
def keys():
    b64 = lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    return {"keys": {"k1": b64()}, "active_key_id": "k1", "index_key": b64()}
(work / "core-keys.json").write_text(json.dumps(keys()))
(work / "info-keys.json").write_text(json.dumps(keys()))
pair = SealingKeyPair.generate()
(work / "private.pem").write_bytes(pair.private_pem())
(work / "public.pem").write_bytes(pair.public_pem())
issuer = dev_issuer(work / "state")
(work / "jwks.json").write_text(json.dumps(issuer.jwks()))
PY
kubectl create namespace "$CORE" --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace "$INFO" --dry-run=client -o yaml | kubectl apply -f -
apply() { kubectl -n "$1" create secret generic "$2" "${@:3}" --dry-run=client -o yaml | kubectl apply -f -; }
for ns in "$CORE" "$INFO"; do
  apply "$ns" kiban-jwks --from-file=jwks.json="$WORK/jwks.json"
  apply "$ns" kiban-sealing-public --from-file=public.pem="$WORK/public.pem"
done
apply "$CORE" kiban-core-sealing --from-file=private.pem="$WORK/private.pem"
apply "$CORE" kiban-core-field-keys --from-file=keys.json="$WORK/core-keys.json"
apply "$INFO" kiban-info-field-keys --from-file=keys.json="$WORK/info-keys.json"
for svc in intake linkage anonymizer; do
  apply "$CORE" "kiban-$svc-db" --from-literal=database-url="postgresql://postgres@$RELEASE-dev-postgres-core.kiban-dev-infra.svc:5432/$svc"
done
for svc in optout review release; do
  apply "$INFO" "kiban-$svc-db" --from-literal=database-url="postgresql://postgres@$RELEASE-dev-postgres-information.kiban-dev-infra.svc:5432/$svc"
done
echo "secrets created; mint tokens with: KIBAN_STATE_DIR=$WORK/state uv run kiban token ..."
