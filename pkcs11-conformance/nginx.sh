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
$(nginx_http_common "$WORK/tmp/")
$(nginx_tls_server "$PORT_RSA" "$WORK/tlsrsa.pem" "pkcs11:object=tlsrsa;type=private" "softmhsm rsa")
$(nginx_tls_server "$PORT_EC" "$WORK/tlsp256.pem" "pkcs11:object=tlsp256;type=private" "softmhsm p256")
}
CONF
nginx_stop() {  # nginx_stop [PIDFILE]: stop that master (default: the first server's) and wait for it;
    # a master or worker stuck in the library (README D4: signals blocked) is killed
    local pf="${1:-$WORK/nginx.pid}" p w
    [ -s "$pf" ] || return 0
    p=$(cat "$pf"); w=$(pgrep -P "$p")
    kill "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { kill -9 "$p" $w 2>/dev/null; echo "    | nginx $p did not stop: killed" >&2; }
    sleep 0.2
}
trap 'nginx_stop; nginx_stop "$WORK/web.pid"; nginx_stop "$WORK/label.pid"; cleanup' EXIT

check "nginx -t with engine keys" timeout 60 nginx -t -p "$WORK" -c "$WORK/nginx.conf"
# start-up errors go to stderr (and Debian's compiled-in /var/log/nginx/error.log), not to our log
if timeout 60 nginx -p "$WORK" -c "$WORK/nginx.conf" 2> logs/startup.log; then pass "nginx starts (master + 2 workers)"
else fail "nginx starts (master + 2 workers)"; tail -n 3 logs/startup.log | sed 's/^/    | /' >&2; fi
for _ in $(seq 50); do [ -s nginx.pid ] && ss -Hltn "sport = :$PORT_EC" | grep -q . && break; sleep 0.2; done
[ -s nginx.pid ] && CLEANUP_PIDS+=("$(cat nginx.pid)")
workers() { local pf="${1:-$WORK/nginx.pid}"; [ -s "$pf" ] && pgrep -c -P "$(cat "$pf")" 2>/dev/null || echo 0; }
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
# --- rotating the key under a running nginx (DESIGN.md §2: CKA_ID names one key version) ------
# The URI names the key by label AND id. A rotation makes a new current version with its own
# CKA_ID (the 16 bytes of its version id); the old version keeps its id, so nginx keeps serving
# the old version - across handshakes, workers forked before the rotation, a reload and a
# restart - until it is given the new version's id and a certificate for it. A label-only URI
# finds the current version: after a rotation it no longer matches the old certificate.
# This nginx runs with `daemon on`: every process left is a fork of the one that opened the
# token store, and must keep a working store while the CLI writes (README.md, D4, fixed).
CLI="$REPO_ROOT/target/release/softmhsm"
[ -x "$CLI" ] || { echo "missing $CLI" >&2; exit 2; }
CLIP() { SOFTMHSM_PIN="$PIN" timeout 60 "$CLI" "$@"; }
pct() { sed 's/../%&/g' <<< "$1"; }                         # hex -> %xx%xx... (a pkcs11: URI id)
kid_version() { grep -o '"kid": *"[^"]*"' | head -n 1 | sed 's/"$//; s/.*\///'; }   # JSON on stdin
EMPTY_SHA=$(printf '' | sha256sum | cut -c1-64)
spki_sha() { O pkey -pubin -outform DER 2>/dev/null | sha256sum | cut -c1-64; }    # PEM SPKI on stdin
cert_pub() { O x509 -in "$1" -noout -pubkey 2>/dev/null | spki_sha; }
served_pub() { echo | O s_client -connect "127.0.0.1:$1" -servername localhost 2>/dev/null | O x509 -noout -pubkey 2>/dev/null | spki_sha; }
token_pub() {  # token_pub FILE SELECTOR...: the token's public key (pkcs11-tool --read-object), hashed
    rm -f "$1"
    P --read-object --type pubkey "${@:2}" -o "$1" >/dev/null 2>&1 || { echo "$EMPTY_SHA"; return; }
    O pkey -pubin -inform DER -in "$1" 2>/dev/null | spki_sha
}
# same_key NAME A B / other_key NAME A B: two public-key hashes (neither empty) are / are not equal
same_key() { if [ "$2" != "$EMPTY_SHA" ] && [ "$2" = "$3" ]; then pass "$1"; else fail "$1"; echo "    | $2 vs $3" >&2; fi; }
other_key() { if [ "$2" != "$EMPTY_SHA" ] && [ "$3" != "$EMPTY_SHA" ] && [ "$2" != "$3" ]; then pass "$1"; else fail "$1"; echo "    | $2 vs $3" >&2; fi; }
privkey_ids() { PL --list-objects --type privkey 2>/dev/null | awk -v n="$1" '/^Private Key Object/{l=""} /^ *label:/{l=$2} /^ *ID:/{if(l==n) print $2}'; }
web_conf() {  # web_conf FILE NAME PORT CERT KEY-URI [DAEMON]: one TLS server, master + 2 workers, logs/NAME-*.log
    cat > "$1" <<CONF
env SOFTMHSM_DIR;
env SOFTMHSM_KDF_ITERATIONS;
env OPENSSL_CONF;
user root;
daemon ${6:-on};
master_process on;
worker_processes 2;
pid $WORK/$2.pid;
error_log $WORK/logs/$2-error.log info;
events { worker_connections 64; }
http {
    log_format w '\$pid \$ssl_protocol \$status';
    access_log $WORK/logs/$2-access.log w;
$(nginx_http_common "$WORK/tmp/")
$(nginx_tls_server "$3" "$4" "$5" "softmhsm web")
}
CONF
}
ngx_start() {  # ngx_start CONF NAME PORT: 0 when the master runs, listens and has 2 workers
    # `daemon off` (the master is the process that loaded the keys) runs in the background here
    local pf="$WORK/$2.pid" m
    rm -f "$pf"
    if grep -q '^daemon off;' "$1"; then
        nginx -p "$WORK" -c "$1" >> "$WORK/logs/$2-startup.log" 2>&1 &
        m=$!; CLEANUP_PIDS+=("$m")
    else timeout 60 nginx -p "$WORK" -c "$1" 2>> "$WORK/logs/$2-startup.log" || return 1; fi
    for _ in $(seq 50); do
        [ -n "${m:-}" ] && ! kill -0 "$m" 2>/dev/null && return 1
        [ -s "$pf" ] && ss -Hltn "sport = :$3" | grep -q . && [ "$(workers "$pf")" = 2 ] && break; sleep 0.2
    done
    [ -s "$pf" ] && CLEANUP_PIDS+=("$(cat "$pf")")
    [ "$(workers "$pf")" = 2 ]
}
ngx_reload() {  # ngx_reload CONF NAME: nginx -s reload; 0 once the old workers are gone and 2 new ones run
    local pf="$WORK/$2.pid" old w still
    old=$(pgrep -P "$(cat "$pf")")
    timeout 30 nginx -p "$WORK" -c "$1" -s reload 2>> "$WORK/logs/$2-startup.log" || return 1
    for _ in $(seq 100); do
        still=0
        for w in $old; do kill -0 "$w" 2>/dev/null && still=1; done
        [ $still = 0 ] && [ "$(workers "$pf")" = 2 ] && return 0
        sleep 0.2
    done
    return 1
}
web_hs() {  # web_hs COUNT CERT: COUNT new TLS connections + GET (TLS 1.2 / 1.3 alternately); prints the failures
    local i bad=0
    for i in $(seq "$1"); do
        if [ $((i % 2)) = 0 ]; then C "$PORT_WEB" "$2" --tlsv1.3 -o /dev/null 2>>curl-web.err || bad=$((bad + 1))
        else C "$PORT_WEB" "$2" --tlsv1.2 --tls-max 1.2 -o /dev/null 2>>curl-web.err || bad=$((bad + 1)); fi
    done
    echo "$bad"
}
hs_ok() {  # hs_ok NAME FAILED
    if [ "$2" = 0 ]; then pass "$1"; else fail "$1"; echo "    | $2 failed" >&2; sort curl-web.err 2>/dev/null | uniq -c | head -n 3 | sed 's/^/    | /' >&2; fi
}

ID_V1=c0ffee01
check "rotation: RSA-2048 key web --id $ID_V1 (pkcs11-tool)" PL --keypairgen --key-type rsa:2048 --label web --id "$ID_V1"
V1=$(CLIP key show --name web 2>/dev/null | kid_version)
check "rotation: certificate for pkcs11:object=web;id=$(pct $ID_V1) (req -x509, engine)" timeout 60 openssl req -x509 -new \
    -engine pkcs11 -keyform engine -key "pkcs11:object=web;id=$(pct $ID_V1);type=private" -subj "/CN=localhost" -days 2 -sha256 \
    -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:TRUE" -out web-v1.pem
PUB_V1=$(cert_pub web-v1.pem)
same_key "rotation: the certificate carries the public key of id $ID_V1" "$PUB_V1" "$(token_pub v1.der --id "$ID_V1")"
PORT_WEB=$(free_port)
while [ "$PORT_WEB" = "$PORT_RSA" ] || [ "$PORT_WEB" = "$PORT_EC" ]; do PORT_WEB=$(free_port); done
web_conf web.conf web "$PORT_WEB" "$WORK/web-v1.pem" "pkcs11:object=web;id=$(pct $ID_V1);type=private"
check "rotation: nginx -t, URI with label and id" timeout 60 nginx -t -p "$WORK" -c "$WORK/web.conf"
if ngx_start web.conf web "$PORT_WEB"; then pass "rotation: nginx starts (master + 2 workers), URI with label and id"
else fail "rotation: nginx starts (master + 2 workers), URI with label and id"; tail -n 3 logs/web-startup.log | sed 's/^/    | /' >&2; fi

# rotation 1: after the master loaded the key, before any handshake (the workers re-find the key after fork)
if CLIP key rotate --name web > rotate1.json 2> rotate1.err && V2=$(kid_version < rotate1.json) && [ -n "$V2" ] && [ "$V2" != "$V1" ]; then
    pass "rotation: softmhsm key rotate --name web before the first handshake (version $V1 -> $V2)"
else fail "rotation: softmhsm key rotate --name web before the first handshake"; cat rotate1.err rotate1.json 2>/dev/null | tail -n 3 | sed 's/^/    | /' >&2; V2=; fi
# --list-objects enumerates by class: every version of the pair, older ones first, the current one last
# (libp11 0.4.12 takes the last match of a label-only URI)
ids=$(privkey_ids web | tr '\n' ' ')
[ "$ids" = "$ID_V1 $V2 " ] && pass "rotation: an enumeration lists the old version, then the new current one, CKA_ID = its version id ($V2)" \
    || fail "rotation: an enumeration lists the old version, then the new current one, CKA_ID = its version id (listed: $ids, version: $V2)"
same_key "rotation: --id $ID_V1 still finds the old version" "$PUB_V1" "$(token_pub v1b.der --id "$ID_V1")"
other_key "rotation: --label web now finds another key" "$PUB_V1" "$(token_pub cur2.der --label web)"
bad=$(web_hs 20 web-v1.pem)
hs_ok "rotation: 20 handshakes after rotating (workers forked before it) with the old certificate" "$bad"
same_key "rotation: served certificate = old certificate (served public key = id $ID_V1's)" "$PUB_V1" "$(served_pub "$PORT_WEB")"
# rotation 2: while the workers serve (they hold sessions and key handles)
if CLIP key rotate --name web > rotate2.json 2> rotate2.err && V3=$(kid_version < rotate2.json) && [ -n "$V3" ] && [ "$V3" != "$V2" ]; then
    pass "rotation: softmhsm key rotate --name web after 20 handshakes (version $V2 -> $V3)"
else fail "rotation: softmhsm key rotate --name web after 20 handshakes"; cat rotate2.err rotate2.json 2>/dev/null | tail -n 3 | sed 's/^/    | /' >&2; V3=; fi
bad=$(web_hs 20 web-v1.pem)
hs_ok "rotation: 20 more handshakes after the second rotation, old certificate" "$bad"
same_key "rotation: still served: the old certificate" "$PUB_V1" "$(served_pub "$PORT_WEB")"
nws=$(awk '{print $1}' logs/web-access.log 2>/dev/null | sort -u | wc -l)
[ "$nws" -ge 2 ] && pass "rotation: both workers served the old version" || fail "rotation: both workers served the old version (pids in access log: $nws)"
# A new load of the key by its URI (reload, restart) finds the old version by its id: libp11 0.4.12
# enumerates every private key with the template {CKA_CLASS} alone and matches label and id itself;
# an enumeration lists older versions of key pairs after the current ones (pkcs11-conformance/README.md,
# D3, fixed). A reload makes new workers that serve the old version on.
old_w=$(pgrep -P "$(cat web.pid)" | sort | tr '\n' ' ')
if ngx_reload web.conf web; then pass "rotation: D3 fixed: nginx -s reload with the old id + old certificate after rotations: new workers"
else fail "rotation: D3 fixed: nginx -s reload with the old id + old certificate after rotations: new workers"; tail -n 3 logs/web-startup.log logs/web-error.log | sed 's/^/    | /' >&2; fi
bad=$(web_hs 20 web-v1.pem)
if [ "$bad" = 0 ] && [ "$(served_pub "$PORT_WEB")" = "$PUB_V1" ]; then pass "rotation: after nginx -s reload nginx serves the old version (20 handshakes, old certificate)"
else fail "rotation: after nginx -s reload nginx serves the old version (20 handshakes, old certificate)"; echo "    | $bad failed" >&2; fi
new_w=$(pgrep -P "$(cat web.pid)" | sort | tr '\n' ' ')
if [ "$new_w" != "$old_w" ]; then pass "rotation: the reload replaced the workers"
else fail "rotation: the reload replaced the workers"; echo "    | workers before: $old_w after: $new_w" >&2; fi

# the documented trap: a label-only URI finds the current version, which does not match the old certificate
PORT_LBL=$(free_port)
while [ "$PORT_LBL" = "$PORT_WEB" ] || [ "$PORT_LBL" = "$PORT_RSA" ] || [ "$PORT_LBL" = "$PORT_EC" ]; do PORT_LBL=$(free_port); done
web_conf label.conf label "$PORT_LBL" "$WORK/web-v1.pem" "pkcs11:object=web;type=private" on
out=$(timeout 60 nginx -t -p "$WORK" -c "$WORK/label.conf" 2>&1); rc=$?
if [ $rc != 0 ] && grep -q 'key values mismatch' <<< "$out"; then pass "rotation: label-only URI + old certificate: nginx -t fails (key values mismatch), as documented"
else fail "rotation: label-only URI + old certificate: nginx -t fails (key values mismatch), as documented"; echo "    | rc=$rc" >&2; tail -n 3 <<< "$out" | sed 's/^/    | /' >&2; fi
if ngx_start label.conf label "$PORT_LBL"; then
    fail "rotation: label-only URI + old certificate: nginx does not start (key values mismatch)"; nginx_stop "$WORK/label.pid"
elif grep -q 'key values mismatch' logs/label-startup.log 2>/dev/null && ! ss -Hltn "sport = :$PORT_LBL" | grep -q .; then
    pass "rotation: label-only URI + old certificate: nginx does not start (key values mismatch)"
else fail "rotation: label-only URI + old certificate: nginx does not start (key values mismatch)"; tail -n 3 logs/label-startup.log | sed 's/^/    | /' >&2; fi

# adopt the new version: its CKA_ID (= the 16 bytes of its version id), a certificate for it, a reload
NEWID=$(privkey_ids web | tail -n 1)
SHOWV=$(CLIP key show --name web 2>/dev/null | kid_version)
if [ -n "$NEWID" ] && [ "$NEWID" = "$SHOWV" ] && [ "$NEWID" = "$V3" ] && [ ${#NEWID} = 32 ]; then
    pass "rotation: current CKA_ID (pkcs11-tool --list-objects) = key show kid version = 16 bytes ($NEWID)"
else fail "rotation: current CKA_ID (pkcs11-tool --list-objects) = key show kid version = 16 bytes"; echo "    | CKA_ID $NEWID, kid version $SHOWV, rotated to $V3" >&2; fi
NEWURI="pkcs11:object=web;id=$(pct "$NEWID");type=private"
check "rotation: certificate for the new version ($NEWURI)" timeout 60 openssl req -x509 -new \
    -engine pkcs11 -keyform engine -key "$NEWURI" -subj "/CN=localhost" -days 2 -sha256 \
    -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:TRUE" -out web-new.pem
PUB_NEW=$(cert_pub web-new.pem)
same_key "rotation: the new certificate carries the public key of the new id" "$PUB_NEW" "$(token_pub new.der --id "$NEWID")"
other_key "rotation: new and old certificates carry different keys" "$PUB_NEW" "$PUB_V1"
cp web.conf web-old.conf
web_conf web.conf web "$PORT_WEB" "$WORK/web-new.pem" "$NEWURI"
check "rotation: nginx -t, new id + new certificate" timeout 60 nginx -t -p "$WORK" -c "$WORK/web.conf"
if ngx_reload web.conf web; then pass "rotation: nginx -s reload with the new id + new certificate: new workers"
else fail "rotation: nginx -s reload with the new id + new certificate: new workers"; tail -n 3 logs/web-startup.log logs/web-error.log | sed 's/^/    | /' >&2; fi
hs_ok "rotation: 20 handshakes after adopting the new version, new certificate" "$(web_hs 20 web-new.pem)"
same_key "rotation: served now: the new certificate" "$PUB_NEW" "$(served_pub "$PORT_WEB")"
if C "$PORT_WEB" web-v1.pem -o /dev/null 2>/dev/null; then fail "rotation: a client pinned to the old certificate no longer verifies the server"
else pass "rotation: a client pinned to the old certificate no longer verifies the server"; fi

# full restart (stop + start: a new process, a new library instance)
nginx_stop "$WORK/web.pid"
if ngx_start web-old.conf web "$PORT_WEB"; then pass "rotation: D3 fixed: nginx restarts (stop + start) with the old id + old certificate"
else fail "rotation: D3 fixed: nginx restarts (stop + start) with the old id + old certificate"; tail -n 3 logs/web-startup.log | sed 's/^/    | /' >&2; fi
hs_ok "rotation: 20 handshakes after the restart on the old id, old certificate" "$(web_hs 20 web-v1.pem)"
same_key "rotation: served after the restart on the old id: the old version" "$PUB_V1" "$(served_pub "$PORT_WEB")"
nginx_stop "$WORK/web.pid"
if ngx_start web.conf web "$PORT_WEB"; then pass "rotation: nginx restarts (stop + start) with the new id + new certificate"
else fail "rotation: nginx restarts (stop + start) with the new id + new certificate"; tail -n 3 logs/web-startup.log | sed 's/^/    | /' >&2; fi
hs_ok "rotation: 20 handshakes after the restart, new certificate" "$(web_hs 20 web-new.pem)"
same_key "rotation: served after the restart: the new certificate" "$PUB_NEW" "$(served_pub "$PORT_WEB")"
# with the certificate of the current version, the label-only URI is fine again
web_conf label.conf label "$PORT_LBL" "$WORK/web-new.pem" "pkcs11:object=web;type=private"
check "rotation: label-only URI + new certificate: nginx -t passes" timeout 60 nginx -t -p "$WORK" -c "$WORK/label.conf"
nginx_stop "$WORK/web.pid"
# no [emerg]/[crit]/[alert], no crashed worker
unexpected() { grep -hE '\[(emerg|crit|alert)\]|worker process [0-9]+ exited on signal' logs/web-error.log logs/web-startup.log 2>/dev/null; }
if [ ! -s logs/web-error.log ] || [ -n "$(unexpected)" ]; then
    fail "rotation: nginx error log has no [emerg]/[crit]/[alert]"; unexpected | head -n 5 | sed 's/^/    | /' >&2
else pass "rotation: nginx error log has no [emerg]/[crit]/[alert]"; fi
unset OPENSSL_CONF
finish
