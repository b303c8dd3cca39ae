#!/usr/bin/env bash
# nginx keyless TLS: the server's private keys (RSA-2048, P-256) live on the token and
# are used through the libp11 engine (`ssl_certificate_key engine:pkcs11:<uri>`).
# master_process on + worker_processes 2: the master loads the engine and the keys,
# the workers are forked afterwards and must re-initialise the library (libp11's
# fork detection). Handshakes are checked with curl (TLS 1.2 and 1.3), certificates
# and public keys with plain OpenSSL.
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl libengine-pkcs11-openssl nginx curl
build_lib
fresh_token
cd "$WORK"
SO=12345678; PIN=1234
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }
PL() { P --login --pin "$PIN" "$@"; }
O() { OPENSSL_CONF=/dev/null timeout 60 openssl "$@"; }

# free_port: a loopback TCP port nobody listens on
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}

P --init-token --label nginxconf --so-pin "$SO" >/dev/null 2>&1
P --init-pin --login --login-type so --so-pin "$SO" --pin "$PIN" >/dev/null 2>&1
ok=1
PL --keypairgen --key-type rsa:2048 --label tlsrsa --id 11 >/dev/null 2>&1 || ok=0
PL --keypairgen --key-type EC:prime256v1 --label tlsp256 --id 12 >/dev/null 2>&1 || ok=0
[ $ok = 1 ] && pass "setup: token, RSA-2048 and P-256 keys (pkcs11-tool)" || fail "setup: token, RSA-2048 and P-256 keys (pkcs11-tool)"

# the private keys never left the token
PL --list-objects --type privkey > privkeys.txt 2>&1
for n in tlsrsa tlsp256; do
    acc=$(awk -v n="$n" '/^Private Key Object/{l=""} /label:/{l=$2} /Access:/{if(l==n){print; exit}}' privkeys.txt)
    if [[ "$acc" == *" sensitive"* && "$acc" == *"never extractable"* && "$acc" != *", extractable"* && "$acc" != *"Access: extractable"* ]]; then
        pass "$n private key: CKA_SENSITIVE TRUE, CKA_EXTRACTABLE FALSE"
    else
        fail "$n private key: CKA_SENSITIVE TRUE, CKA_EXTRACTABLE FALSE"; echo "    | $n: ${acc:-<not listed>}" >&2
    fi
done

engine_cnf engine.cnf 1
export OPENSSL_CONF="$WORK/engine.cnf"

# self-signed certificates for the token keys (signed on the token)
for e in tlsrsa tlsp256; do
    check "req -x509 -new $e (engine)" timeout 60 openssl req -x509 -new -engine pkcs11 -keyform engine \
        -key "pkcs11:object=$e;type=private" -subj "/CN=localhost" -days 2 -sha256 \
        -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:TRUE" -out "$e.pem"
    check "$e certificate self-signature verifies (plain openssl)" O verify -CAfile "$e.pem" "$e.pem"
done

PORT_RSA=$(free_port); PORT_EC=$(free_port)
while [ "$PORT_EC" = "$PORT_RSA" ]; do PORT_EC=$(free_port); done
mkdir -p logs tmp
cat > nginx.conf <<CONF
# the workers must see the token (nginx clears the environment of its workers)
env SOFTMHSM_DIR;
env SOFTMHSM_KDF_ITERATIONS;
env OPENSSL_CONF;
user root;
daemon on;
master_process on;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log info;
events { worker_connections 64; }
http {
    log_format w '\$pid \$ssl_protocol \$ssl_cipher \$status';
    access_log $WORK/logs/access.log w;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$PORT_RSA ssl reuseport;   # reuseport: the kernel spreads connections over both workers
        server_name localhost;
        ssl_certificate $WORK/tlsrsa.pem;
        ssl_certificate_key "engine:pkcs11:pkcs11:object=tlsrsa;type=private";
        location / { return 200 "softmhsm rsa\n"; }
    }
    server {
        listen 127.0.0.1:$PORT_EC ssl reuseport;
        server_name localhost;
        ssl_certificate $WORK/tlsp256.pem;
        ssl_certificate_key "engine:pkcs11:pkcs11:object=tlsp256;type=private";
        location / { return 200 "softmhsm p256\n"; }
    }
}
CONF
nginx_stop() {
    [ -s "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    sleep 0.5
}
trap 'nginx_stop; cleanup' EXIT

check "nginx -t with engine keys" timeout 60 nginx -t -p "$WORK" -c "$WORK/nginx.conf"
# start-up errors go to stderr (and Debian's compiled-in /var/log/nginx/error.log), not to our log
if timeout 60 nginx -p "$WORK" -c "$WORK/nginx.conf" 2> logs/startup.log; then pass "nginx starts (master + 2 workers)"
else fail "nginx starts (master + 2 workers)"; tail -n 3 logs/startup.log | sed 's/^/    | /' >&2; fi
for _ in $(seq 50); do [ -s nginx.pid ] && ss -Hltn "sport = :$PORT_EC" | grep -q . && break; sleep 0.2; done
[ -s nginx.pid ] && CLEANUP_PIDS+=("$(cat nginx.pid)")
workers() { [ -s "$WORK/nginx.pid" ] && pgrep -c -P "$(cat "$WORK/nginx.pid")" 2>/dev/null || echo 0; }
nw=$(workers)
[ "$nw" = 2 ] && pass "nginx runs 2 worker processes" || fail "nginx runs 2 worker processes (found $nw)"

# C URL: one handshake + GET, plain curl (OpenSSL without the engine)
C() {
    local port="$1" cert="$2"; shift 2
    OPENSSL_CONF=/dev/null timeout 20 curl -sS --fail --resolve "localhost:$port:127.0.0.1" \
        --cacert "$cert" "$@" "https://localhost:$port/"
}
hs() {  # hs NAME PORT CERT EXPECTED-BODY TLS-ARGS...
    local name="$1" port="$2" cert="$3" body="$4"; shift 4
    local out
    if out=$(C "$port" "$cert" "$@" -w '%{http_code}' 2>&1) && [ "$out" = "${body}200" ]; then pass "$name"
    else fail "$name"; printf '%s\n' "$out" | tail -n 3 | sed 's/^/    | /' >&2; fi
}
hs "TLS 1.2 handshake + GET, RSA-2048 key on the token" "$PORT_RSA" tlsrsa.pem "softmhsm rsa"$'\n' --tlsv1.2 --tls-max 1.2
hs "TLS 1.3 handshake + GET, RSA-2048 key on the token" "$PORT_RSA" tlsrsa.pem "softmhsm rsa"$'\n' --tlsv1.3
hs "TLS 1.2 handshake + GET, P-256 key on the token" "$PORT_EC" tlsp256.pem "softmhsm p256"$'\n' --tlsv1.2 --tls-max 1.2
hs "TLS 1.3 handshake + GET, P-256 key on the token" "$PORT_EC" tlsp256.pem "softmhsm p256"$'\n' --tlsv1.3
# TLS 1.2 with a PKCS#1 v1.5 signature (curl cannot restrict signature algorithms: s_client).
# -ign_eof: without it s_client may hang up at end of stdin before the HTTP/1.0 answer arrives (a race seen in CI).
out=$(printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' | O s_client -connect "127.0.0.1:$PORT_RSA" -servername localhost \
    -tls1_2 -sigalgs RSA+SHA256 -CAfile tlsrsa.pem -verify_return_error -brief -ign_eof 2>&1)
if grep -qE '^(Peer s|S)ignature type: RSA$' <<< "$out" && grep -q '^Verification: OK' <<< "$out" && grep -q 'softmhsm rsa' <<< "$out"; then
    pass "TLS 1.2 handshake + GET, RSA PKCS#1 v1.5 signature (s_client -sigalgs RSA+SHA256)"
else fail "TLS 1.2 handshake + GET, RSA PKCS#1 v1.5 signature (s_client -sigalgs RSA+SHA256)"; tail -n 5 <<< "$out" | sed 's/^/    | /' >&2; fi
# the server really presented the token's key: compare the served certificate's key with the token's
for e in "tlsrsa $PORT_RSA 11" "tlsp256 $PORT_EC 12"; do
    read -r n port id <<< "$e"
    P --read-object --type pubkey --id "$id" -o "$n.pub.der" >/dev/null 2>&1
    served=$(echo | O s_client -connect "127.0.0.1:$port" -servername localhost 2>/dev/null | O x509 -noout -pubkey 2>/dev/null | O pkey -pubin -outform DER 2>/dev/null | sha256sum)
    token=$(O pkey -pubin -inform DER -in "$n.pub.der" -outform DER 2>/dev/null | sha256sum)
    if [ -s "$n.pub.der" ] && [ "$served" = "$token" ]; then pass "$n: served certificate carries the token's public key"
    else fail "$n: served certificate carries the token's public key"; fi
done

# 200 sequential handshakes (each a new TLS connection), alternating protocols and keys; at most 120 s
n=0; bad=0; t0=$SECONDS
while [ $n -lt 200 ] && [ $((SECONDS - t0)) -lt 120 ]; do
    case $((n % 4)) in
        0) args=("$PORT_RSA" tlsrsa.pem --tlsv1.3) ;;
        1) args=("$PORT_EC" tlsp256.pem --tlsv1.3) ;;
        2) args=("$PORT_RSA" tlsrsa.pem --tlsv1.2 --tls-max 1.2) ;;
        3) args=("$PORT_EC" tlsp256.pem --tlsv1.2 --tls-max 1.2) ;;
    esac
    C "${args[@]}" -o /dev/null 2>>curl-loop.err || bad=$((bad + 1))
    n=$((n + 1))
done
if [ $n -eq 200 ] && [ $bad -eq 0 ]; then pass "200 sequential handshakes all succeed ($((SECONDS - t0)) s)"
else fail "200 sequential handshakes all succeed"; echo "    | $n done in $((SECONDS - t0)) s, $bad failed" >&2; sort curl-loop.err | uniq -c | head -n 3 | sed 's/^/    | /' >&2; fi

# concurrent handshakes: 8 clients at a time, 200 in all, over both workers and both keys
export -f C
export PORT_RSA PORT_EC
t0=$SECONDS
bad=$(seq 200 | timeout 120 xargs -P 8 -I{} bash -c '
    if [ $(({} % 2)) = 0 ]; then C "$PORT_RSA" tlsrsa.pem -o /dev/null; else C "$PORT_EC" tlsp256.pem -o /dev/null; fi \
        || echo BAD' 2>>curl-par.err | grep -c BAD)
if [ "$bad" = 0 ] && [ $(grep -c ' 200$' logs/access.log) -ge 400 ]; then pass "200 concurrent handshakes (8 in parallel) all succeed ($((SECONDS - t0)) s)"
else fail "200 concurrent handshakes (8 in parallel) all succeed"; echo "    | $bad failed" >&2; sort curl-par.err | uniq -c | head -n 3 | sed 's/^/    | /' >&2; fi

# both workers served (the fork case really exercised in each worker)
nwserved=$(awk '{print $1}' logs/access.log 2>/dev/null | sort -u | wc -l)
[ "$nwserved" -ge 2 ] && pass "both worker processes served TLS with the token keys" \
    || fail "both worker processes served TLS with the token keys (pids in access log: $nwserved)"
nw_after=$(workers)
[ "$nw_after" = 2 ] && pass "nginx still runs 2 workers after the handshakes (no worker crashed)" \
    || fail "nginx still runs 2 workers after the handshakes (found $nw_after)"
# reload: the master re-reads the configuration, loads the keys again through the engine
# (library already initialised in the master) and forks new workers
old=$(pgrep -P "$(cat nginx.pid)" | sort | tr '\n' ' ')
if timeout 30 nginx -p "$WORK" -c "$WORK/nginx.conf" -s reload 2>> logs/startup.log; then
    for _ in $(seq 50); do
        new=$(pgrep -P "$(cat nginx.pid)" | sort | tr '\n' ' ')
        [ -n "$new" ] && [ "$new" != "$old" ] && [ "$(workers)" = 2 ] && ! grep -qw -- "$(echo "$old" | awk '{print $1}')" <<< "$new" && break
        sleep 0.2
    done
    bad=0
    for i in $(seq 20); do
        if [ $((i % 2)) = 0 ]; then C "$PORT_RSA" tlsrsa.pem -o /dev/null 2>>curl-reload.err || bad=$((bad + 1))
        else C "$PORT_EC" tlsp256.pem -o /dev/null 2>>curl-reload.err || bad=$((bad + 1)); fi
    done
    if [ "$new" != "$old" ] && [ $bad = 0 ]; then pass "nginx -s reload: new workers, 20 handshakes succeed"
    else fail "nginx -s reload: new workers, 20 handshakes succeed"; echo "    | workers before: $old after: $new; $bad failed" >&2
        sort curl-reload.err 2>/dev/null | uniq -c | head -n 3 | sed 's/^/    | /' >&2; fi
else fail "nginx -s reload: new workers, 20 handshakes succeed"; tail -n 3 logs/startup.log | sed 's/^/    | /' >&2; fi
nginx_stop
if [ ! -s logs/error.log ] || grep -E '\[(emerg|crit|alert)\]|worker process [0-9]+ exited on signal' logs/error.log logs/startup.log >/dev/null 2>&1; then
    fail "nginx error log has no [emerg]/[crit]/[alert]"
    grep -hE '\[(emerg|crit|alert)\]|exited on signal' logs/error.log logs/startup.log 2>/dev/null | head -n 5 | sed 's/^/    | /' >&2
else pass "nginx error log has no [emerg]/[crit]/[alert]"; fi
unset OPENSSL_CONF
finish
