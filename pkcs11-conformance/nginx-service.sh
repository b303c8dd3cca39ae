#!/usr/bin/env bash
# nginx as a service (issue 15): the workers run as nginx's DEFAULT user (no
# `user` directive: nobody/nogroup on Debian), nginx.conf has no `env` line for
# softmhsm, and the token is configured only in the system configuration
# /etc/softmhsm/softmhsm.toml. The store is made by root with `softmhsm init
# --group <the workers' group>`. The master (root) loads the keys through the
# libp11 engine; each worker re-initialises the library after fork (libp11's
# fork detection) and must read the system file and open the group-shared store
# as nobody. Checks: TLS handshakes with both keys, the served certificates carry
# the token's public keys, the workers' own logins in the token's audit log
# (pids of the nobody workers), and, with the group's access taken
# away, a worker's failure is an error naming the store and the cause in nginx's
# error log (the handshake then hangs in libp11 0.4.12: see below).
# Writes /etc/softmhsm/softmhsm.toml: a file already there is moved aside and
# put back at exit (run as root on a machine where that is acceptable: CI, a dev box).
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl libengine-pkcs11-openssl nginx curl
build_lib
CLI="$REPO_ROOT/target/release/softmhsm"
[ -x "$CLI" ] || { echo "missing $CLI" >&2; exit 2; }
unset SOFTMHSM_DIR SOFTMHSM_CONF SOFTMHSM_STORE_URL SOFTMHSM_KDF_ITERATIONS SOFTMHSM_PIN
SO=12345678; PIN=1234
SYS=/etc/softmhsm/softmhsm.toml

# the workers' user and group: nginx's compiled-in default (no `user` directive)
NGX_USER=nobody
NGX_GROUP=$(id -gn "$NGX_USER")
# $WORK (0700) holds what only root (the master, this script) reads; the token
# lives beside it in a directory the workers can reach
WORK=$(mktemp -d /tmp/softmhsm-svc.XXXXXX)
BASE=$(mktemp -d /tmp/softmhsm-svc-store.XXXXXX)
chmod 755 "$BASE"
TOKEN="$BASE/lib/token"
CLEANUP_DIRS+=("$WORK" "$BASE")
cd "$WORK"

# the system configuration: ours while the script runs, the previous one (if any) back at exit
SYS_SAVED=; SYS_DIR_MADE=
if [ -e "$SYS" ]; then SYS_SAVED="$WORK/softmhsm.toml.saved"; cp -p "$SYS" "$SYS_SAVED"; fi
[ -d /etc/softmhsm ] || { mkdir -p /etc/softmhsm; SYS_DIR_MADE=1; }
restore_sys() {
    if [ -n "$SYS_SAVED" ]; then cp -p "$SYS_SAVED" "$SYS"
    else rm -f "$SYS"; [ -n "$SYS_DIR_MADE" ] && rmdir /etc/softmhsm 2>/dev/null; fi
}
nginx_stop() {  # nginx_stop PIDFILE: stop that master and wait; a stuck one (and its workers) is killed
    local pf="$1" p w
    [ -s "$pf" ] || return 0
    p=$(cat "$pf"); w=$(pgrep -P "$p")
    kill "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { kill -9 "$p" $w 2>/dev/null; echo "    | nginx $p did not stop: killed" >&2; }
    for _ in $(seq 30); do
        local alive=0; for x in $w; do kill -0 "$x" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.1
    done
    rm -f "$pf"
}
trap 'nginx_stop "$WORK/svc.pid"; restore_sys; cleanup' EXIT

printf '# written by pkcs11-conformance/nginx-service.sh\n[[token]]\npath = "%s"\nkdf_iterations = 1000\n' "$TOKEN" > "$SYS"
chmod 644 "$SYS"

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}
O() { OPENSSL_CONF=/dev/null timeout 60 openssl "$@"; }
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }

# the store: made by root, shared with the workers' group; nothing in the environment names it
check "softmhsm init --group $NGX_GROUP (token from $SYS only)" timeout 60 "$CLI" init --label svc --so-pin "$SO" --pin "$PIN" --group "$NGX_GROUP"
check "the store is in the system configuration's directory" test -f "$TOKEN/softmhsm.db"
perm=$(stat -c '%a %G' "$TOKEN" "$TOKEN"/* | sort -u | tr '\n' ' ')
[ "$perm" = "2770 $NGX_GROUP 660 $NGX_GROUP " ] && pass "token directory 2770, files 0660, group $NGX_GROUP (nothing for others)" \
    || fail "token directory 2770, files 0660, group $NGX_GROUP (nothing for others): $perm"
check "RSA-2048 key tlsrsa (softmhsm key create)" timeout 60 "$CLI" key create --name tlsrsa --kty RSA --size 2048 --pin "$PIN"
check "P-256 key tlsp256 (softmhsm key create)" timeout 60 "$CLI" key create --name tlsp256 --kty EC --curve P-256 --pin "$PIN"
# the service user reads the system file and opens the store (a process of its own, not nginx)
check "as $NGX_USER: pkcs11-tool lists the token's keys (system configuration, group access)" \
    runuser -u "$NGX_USER" -- env -i PATH="$PATH" timeout 60 pkcs11-tool --module "$MODULE" --login --pin "$PIN" --list-objects --type privkey

engine_cnf engine.cnf 1
export OPENSSL_CONF="$WORK/engine.cnf"   # the master's OpenSSL configuration (the engine), not softmhsm's
for e in tlsrsa tlsp256; do
    check "req -x509 -new $e (engine, key on the token)" timeout 60 openssl req -x509 -new -engine pkcs11 -keyform engine \
        -key "pkcs11:object=$e;type=private" -subj "/CN=localhost" -days 2 -sha256 \
        -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:TRUE" -out "$e.pem"
done

PORT_RSA=$(free_port); PORT_EC=$(free_port)
while [ "$PORT_EC" = "$PORT_RSA" ]; do PORT_EC=$(free_port); done
mkdir -p logs tmp
cat > svc.conf <<CONF
# no 'user' directive: the workers run as nginx's default user; no 'env' line:
# softmhsm finds its token in $SYS
daemon on;
master_process on;
worker_processes 2;
pid $WORK/svc.pid;
error_log $WORK/logs/error.log info;
events { worker_connections 64; }
http {
    log_format w '\$pid \$ssl_protocol \$status';
    access_log $WORK/logs/access.log w;
$(nginx_http_common "$WORK/tmp/")
$(nginx_tls_server "$PORT_RSA" "$WORK/tlsrsa.pem" "pkcs11:object=tlsrsa;type=private" "softmhsm rsa")
$(nginx_tls_server "$PORT_EC" "$WORK/tlsp256.pem" "pkcs11:object=tlsp256;type=private" "softmhsm p256")
}
CONF
if grep -qE '^\s*(user|env)\s' svc.conf; then fail "nginx.conf has no user and no env directive"
else pass "nginx.conf has no user and no env directive"; fi

workers() { [ -s "$WORK/svc.pid" ] && pgrep -P "$(cat "$WORK/svc.pid")" | tr '\n' ' '; }
svc_start() {  # 0 once the master listens on both ports with 2 workers
    rm -f "$WORK/svc.pid"
    timeout 60 env -u SOFTMHSM_DIR nginx -p "$WORK" -c "$WORK/svc.conf" 2>> logs/startup.log || return 1
    for _ in $(seq 50); do
        [ -s svc.pid ] && ss -Hltn "sport = :$PORT_EC" | grep -q . && [ "$(workers | wc -w)" = 2 ] && break; sleep 0.2
    done
    [ -s svc.pid ] && CLEANUP_PIDS+=("$(cat svc.pid)")
    [ "$(workers | wc -w)" = 2 ]
}
C() {  # C PORT CERT CURL-ARGS...: one handshake + GET with plain curl
    local port="$1" cert="$2"; shift 2
    OPENSSL_CONF=/dev/null timeout 20 curl -sS --fail --resolve "localhost:$port:127.0.0.1" \
        --cacert "$cert" "$@" "https://localhost:$port/"
}

check "nginx -t" timeout 60 nginx -t -p "$WORK" -c "$WORK/svc.conf"
if svc_start; then pass "nginx starts (master + 2 workers)"
else fail "nginx starts (master + 2 workers)"; tail -n 3 logs/startup.log logs/error.log 2>/dev/null | sed 's/^/    | /' >&2; fi
wu=$(for w in $(workers); do ps -o user=,group= -p "$w"; done | sort -u | tr -s ' ' | tr '\n' ';')
[ "$wu" = "$NGX_USER $NGX_GROUP;" ] && pass "the workers run as $NGX_USER:$NGX_GROUP (nginx's default)" \
    || fail "the workers run as $NGX_USER:$NGX_GROUP (nginx's default): $wu"
wenv=$(for w in $(workers); do tr '\0' '\n' < "/proc/$w/environ"; done | grep -c '^SOFTMHSM_')
[ "$wenv" = 0 ] && pass "no SOFTMHSM_* variable in the workers' environment" \
    || fail "no SOFTMHSM_* variable in the workers' environment ($wenv found)"

hs() {  # hs NAME PORT CERT BODY TLS-ARGS...
    local name="$1" port="$2" cert="$3" body="$4"; shift 4
    local out
    if out=$(C "$port" "$cert" "$@" -w '%{http_code}' 2>&1) && [ "$out" = "${body}200" ]; then pass "$name"
    else fail "$name"; printf '%s\n' "$out" | tail -n 3 | sed 's/^/    | /' >&2; fi
}
hs "TLS 1.3 handshake + GET, RSA-2048 key on the token" "$PORT_RSA" tlsrsa.pem "softmhsm rsa"$'\n' --tlsv1.3
hs "TLS 1.2 handshake + GET, RSA-2048 key on the token" "$PORT_RSA" tlsrsa.pem "softmhsm rsa"$'\n' --tlsv1.2 --tls-max 1.2
hs "TLS 1.3 handshake + GET, P-256 key on the token" "$PORT_EC" tlsp256.pem "softmhsm p256"$'\n' --tlsv1.3
hs "TLS 1.2 handshake + GET, P-256 key on the token" "$PORT_EC" tlsp256.pem "softmhsm p256"$'\n' --tlsv1.2 --tls-max 1.2
for e in "tlsrsa $PORT_RSA" "tlsp256 $PORT_EC"; do
    read -r n port <<< "$e"
    "$CLI" key download --name "$n" --file "$n.pub.pem" --pin "$PIN" >/dev/null 2>&1
    served=$(echo | O s_client -connect "127.0.0.1:$port" -servername localhost 2>/dev/null | O x509 -noout -pubkey 2>/dev/null | O pkey -pubin -outform DER 2>/dev/null | sha256sum)
    token=$(O pkey -pubin -in "$n.pub.pem" -outform DER 2>/dev/null | sha256sum)
    if [ -s "$n.pub.pem" ] && [ "$served" = "$token" ]; then pass "$n: served certificate carries the token key's public key (key download)"
    else fail "$n: served certificate carries the token key's public key (key download)"; fi
done
bad=0
for i in $(seq 40); do
    if [ $((i % 2)) = 0 ]; then C "$PORT_RSA" tlsrsa.pem -o /dev/null 2>>curl.err || bad=$((bad + 1))
    else C "$PORT_EC" tlsp256.pem -o /dev/null 2>>curl.err || bad=$((bad + 1)); fi
done
[ $bad = 0 ] && pass "40 more handshakes, both keys, all succeed" || { fail "40 more handshakes, both keys, all succeed ($bad failed)"; sort curl.err | uniq -c | head -n 3 | sed 's/^/    | /' >&2; }
nserved=$(awk '$3 == 200 {print $1}' logs/access.log | sort -u | wc -l)
[ "$nserved" -ge 2 ] && pass "both workers served TLS" || fail "both workers served TLS (pids in access log: $nserved)"
# the workers opened the token themselves, as nobody: the audit log has their logins
# (libp11 logs in again after fork; successful signatures are not audited)
sleep 1.5   # the audit log is written at most a second after the event
logins=0
for w in $(workers); do grep "\"pid\":$w[,}]" "$TOKEN"/audit-*.jsonl 2>/dev/null | grep -q '"operationName":"Login","resultType":"Success"' && logins=$((logins + 1)); done
if [ "$logins" -ge 2 ]; then pass "audit log: both $NGX_USER workers logged in to the token (their own pids)"
else fail "audit log: both $NGX_USER workers logged in to the token ($logins did)"; tail -n 2 "$TOKEN"/audit-*.jsonl 2>/dev/null | sed 's/^/    | /' >&2; fi
perm=$(stat -c '%a %G' "$TOKEN"/* | sort -u | tr '\n' ' ')
[ "$perm" = "660 $NGX_GROUP " ] && pass "after the workers wrote (WAL, audit log): every file still 0660 $NGX_GROUP" \
    || fail "after the workers wrote (WAL, audit log): every file still 0660 $NGX_GROUP: $perm"
if grep -qE '\[(emerg|crit|alert)\]|exited on signal' logs/error.log; then fail "error log: no [emerg]/[crit]/[alert], no crashed worker"
    grep -E '\[(emerg|crit|alert)\]|exited on signal' logs/error.log | head -n 3 | sed 's/^/    | /' >&2
else pass "error log: no [emerg]/[crit]/[alert], no crashed worker"; fi
nginx_stop "$WORK/svc.pid"

# negative: the group loses its access; the master (root) still loads the keys,
# the workers cannot open the store: a clear error in nginx's log
chmod 0700 "$TOKEN"
: > logs/error.log
if svc_start; then pass "without group access: nginx still starts (the root master loads the keys)"
else fail "without group access: nginx still starts (the root master loads the keys)"; tail -n 3 logs/startup.log | sed 's/^/    | /' >&2; fi
# libp11 0.4.12 (Debian bookworm's engine) waits forever on its session pool's
# condition variable when C_OpenSession fails (pkcs11_get_session; later libp11
# returns the error instead): the handshake hangs until the client gives up.
# Bounded here by curl's 5 s; the library's part is the error line checked below.
if C "$PORT_RSA" tlsrsa.pem -o /dev/null --max-time 5 2> neg.err; then fail "without group access: the handshake fails"
else pass "without group access: the handshake fails"; fi
if grep -q "$TOKEN" logs/error.log && grep -qi "permission denied" logs/error.log; then
    pass "without group access: nginx's error log names the store and the cause"
    grep -m1 "$TOKEN" logs/error.log | cut -c1-200 | sed 's/^/    | /'
else fail "without group access: nginx's error log names the store and the cause"; tail -n 5 logs/error.log | sed 's/^/    | /' >&2; fi
nginx_stop "$WORK/svc.pid"
chmod 2770 "$TOKEN"
unset OPENSSL_CONF
finish
