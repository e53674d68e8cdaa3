# Sourced by the bench and chaos scripts after .env: without a .env (a fresh clone), the
# throwaway deployment they start signs tokens and encrypts provider tokens with random keys.
: "${SECRET_KEY:=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export SECRET_KEY
: "${TOKEN_ENCRYPTION_KEYS:=throwaway:$(head -c 32 /dev/urandom | base64 | tr -d '\n')}"
export TOKEN_ENCRYPTION_KEYS
