#!/usr/bin/env bash
# Throwaway auth material for the dev overlay, generated on this machine, never committed:
#   deploy/k8s/overlays/dev/dev-secrets.sh            writes secrets/ (when missing or expiring)
#   deploy/k8s/overlays/dev/dev-secrets.sh token SUBJECT AUDIENCE [SCOPE...]
#                                                     prints a token of the dev issuer (1 hour)
# secrets/ (ignored by git) holds:
#   issuer.key          the dev issuer's Ed25519 signing key (stays here: no Secret carries it)
#   jwks.json           its public key as a JWKS: Secret stack-auth-jwks, mounted by both services
#   orders-users.token  orders' token towards users (subject orders, audience users, scope
#                       users.read, 7 days; re-minted when it has less than a day left):
#                       Secret orders-users-token, mounted by orders
# kustomize reads these files (secretGenerator), so run this before `kustomize build` or
# `rollout.sh dev`; `make deploy-lint` does. Needs openssl (3.x: Ed25519 raw signing) and python3.
set -euo pipefail
cd "$(dirname "$0")"

ISSUER=https://stack-dev.local
SECRETS=secrets
ORDERS_TOKEN_LIFETIME=$((7 * 24 * 3600))

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# kid: the first 16 hex digits of the SHA-256 of the public key.
public_key_raw() { openssl pkey -in "$SECRETS/issuer.key" -pubout -outform DER | tail -c 32; }
kid() { public_key_raw | sha256sum | cut -c1-16; }

# token SUBJECT AUDIENCE LIFETIME_SECONDS [SCOPE...]: an EdDSA JWT of the dev issuer.
token() {
  local subject=$1 audience=$2 lifetime=$3
  shift 3
  local now header claims signature
  now=$(date +%s)
  header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"%s"}' "$(kid)" | b64url)
  claims=$(python3 -c 'import json,sys; i,s,a,n,l=sys.argv[1:6]; print(json.dumps({"iss":i,"sub":s,"aud":a,"iat":int(n),"nbf":int(n),"exp":int(n)+int(l),"scope":" ".join(sys.argv[6:])},separators=(",",":")),end="")' \
    "$ISSUER" "$subject" "$audience" "$now" "$lifetime" "$@" | b64url)
  # Ed25519 signs the message whole (no digest first), and pkeyutl needs it as a file.
  local input
  input=$(mktemp)
  printf '%s.%s' "$header" "$claims" >"$input"
  signature=$(openssl pkeyutl -sign -inkey "$SECRETS/issuer.key" -rawin -in "$input" | b64url)
  rm -f "$input"
  printf '%s.%s.%s\n' "$header" "$claims" "$signature"
}

# expires_within SECONDS FILE: the token in FILE expires within SECONDS (or does not parse).
expires_within() {
  python3 - "$1" "$2" <<'EOF'
import base64, json, sys, time
try:
    claims = open(sys.argv[2]).read().strip().split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"]
except Exception:
    sys.exit(0)
sys.exit(0 if exp - time.time() < int(sys.argv[1]) else 1)
EOF
}

mkdir -p "$SECRETS"
chmod 700 "$SECRETS"
if [ ! -s "$SECRETS/issuer.key" ]; then
  openssl genpkey -algorithm ed25519 -out "$SECRETS/issuer.key.partial" 2>/dev/null
  chmod 600 "$SECRETS/issuer.key.partial"
  mv "$SECRETS/issuer.key.partial" "$SECRETS/issuer.key"
  rm -f "$SECRETS/jwks.json" "$SECRETS/orders-users.token"
fi
if [ "${1:-}" = token ]; then
  [ $# -ge 3 ] || { echo "usage: $0 token SUBJECT AUDIENCE [SCOPE...]" >&2; exit 64; }
  subject=$2 audience=$3
  shift 3
  token "$subject" "$audience" 3600 "$@"
  exit 0
fi
if [ ! -s "$SECRETS/jwks.json" ]; then
  printf '{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"%s","x":"%s"}]}\n' \
    "$(kid)" "$(public_key_raw | b64url)" >"$SECRETS/jwks.json"
fi
if expires_within 86400 "$SECRETS/orders-users.token"; then
  token orders users "$ORDERS_TOKEN_LIFETIME" users.read >"$SECRETS/orders-users.token.partial"
  chmod 600 "$SECRETS/orders-users.token.partial"
  mv "$SECRETS/orders-users.token.partial" "$SECRETS/orders-users.token"
fi
