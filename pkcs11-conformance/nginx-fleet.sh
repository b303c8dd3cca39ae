#!/usr/bin/env bash
# A fleet of two nginx servers on one PostgreSQL pool (issue 12): "machines" A and B
# each have their own local state (their own SOFTMHSM_CONF and token directory: the
# audit log) and their token's `url` names one database in a throwaway cluster
# (tests/with-postgres.sh). A key made on A is served by both; the admin CLI (on A)
# rotates it — B finds the new version without anything copied, and both serve it
# after a reload — then disables it: handshakes on both fail within the staleness
# bound (max_staleness_ms = 1000), and work again once it is re-enabled.
# Keys reach nginx through the libp11 engine, as in nginx.sh.
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl libengine-pkcs11-openssl nginx curl postgresql
if [ -z "${SOFTMHSM_STORE_URL:-}" ]; then
    exec bash "$REPO_ROOT/tests/with-postgres.sh" bash "$0" "$@"
fi
build_lib
fresh_token
cd "$WORK"
URL="$SOFTMHSM_STORE_URL"
unset SOFTMHSM_STORE_URL SOFTMHSM_DIR
SO=12345678; PIN=1234
CLI="$REPO_ROOT/target/release/softmhsm"
[ -x "$CLI" ] || { echo "missing $CLI" >&2; exit 2; }
O() { OPENSSL_CONF=/dev/null timeout 60 openssl "$@"; }
# machine NAME: its own token directory and configuration, naming the shared pool
machine() {
    mkdir -p "$WORK/$1/token"; chmod 700 "$WORK/$1/token"
    cat > "$WORK/$1/softmhsm.toml" <<TOML
[[token]]
path = "$WORK/$1/token"
url = "$URL"
max_staleness_ms = 1000
TOML
}
machine a; machine b
# on NAME CMD...: run CMD as machine NAME (its configuration, the engine config for openssl)
on() { local m="$1"; shift; SOFTMHSM_CONF="$WORK/$m/softmhsm.toml" OPENSSL_CONF="$WORK/engine.cnf" "$@"; }
CLIP() { on a env SOFTMHSM_PIN="$PIN" timeout 60 "$CLI" "$@"; }
kid_version() { grep -o '"kid": *"[^"]*"' | head -n 1 | sed 's/"$//; s/.*\///'; }
pct() { sed 's/../%&/g' <<< "$1"; }
spki_sha() { O pkey -pubin -outform DER 2>/dev/null | sha256sum | cut -c1-64; }
cert_pub() { O x509 -in "$1" -noout -pubkey 2>/dev/null | spki_sha; }
served_pub() { echo | O s_client -connect "127.0.0.1:$1" -servername localhost 2>/dev/null | O x509 -noout -pubkey 2>/dev/null | spki_sha; }
EMPTY_SHA=$(printf '' | sha256sum | cut -c1-64)
engine_cnf engine.cnf 0
engine_cnf engine-nginx.cnf 1

check "pool: softmhsm init on machine A creates the schema in the empty database" \
    on a env SOFTMHSM_PIN="$PIN" "$CLI" init --label fleet --so-pin "$SO"
if CLIP key create --name web --kty EC --curve P-256 > create.json 2> create.err && V1=$(kid_version < create.json) && [ ${#V1} = 32 ]; then
    pass "machine A: key create --name web (P-256, version $V1)"
else fail "machine A: key create --name web"; cat create.err | tail -n 3 | sed 's/^/    | /' >&2; V1=; fi
ids_b=$(on b timeout 60 pkcs11-tool --module "$MODULE" --login --pin "$PIN" --list-objects --type privkey 2>/dev/null | awk '/^ *ID:/{print $2}')
[ "$ids_b" = "$V1" ] && pass "machine B (its own state, nothing copied) lists the key: CKA_ID $V1" \
    || fail "machine B lists the key made on A (listed: $ids_b)"
cert() {  # cert MACHINE VERSION FILE: a self-signed certificate made with that version, on that machine
    on "$1" timeout 60 openssl req -x509 -new -engine pkcs11 -keyform engine \
        -key "pkcs11:object=web;id=$(pct "$2");type=private" -subj "/CN=localhost" -days 2 -sha256 \
        -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:TRUE" -out "$3"
}
check "machine B signs a certificate with the key made on A (req -x509, engine)" cert b "$V1" web-v1.pem

PORT_A=$(free_port); PORT_B=$(free_port)
while [ "$PORT_B" = "$PORT_A" ]; do PORT_B=$(free_port); done
mkdir -p tmp logs
conf() {  # conf MACHINE PORT CERT VERSION
    cat > "$WORK/$1/nginx.conf" <<CONF
env SOFTMHSM_CONF;
env OPENSSL_CONF;
user root;
daemon on;
master_process on;
worker_processes 2;
pid $WORK/$1/nginx.pid;
error_log $WORK/logs/$1-error.log info;
events { worker_connections 64; }
http {
    access_log $WORK/logs/$1-access.log;
$(nginx_http_common "$WORK/tmp/$1-")
$(nginx_tls_server "$2" "$3" "pkcs11:object=web;id=$(pct "$4");type=private" "machine $1")
}
CONF
}
workers() { [ -s "$WORK/$1/nginx.pid" ] && pgrep -c -P "$(cat "$WORK/$1/nginx.pid")" 2>/dev/null || echo 0; }
ngx() {  # ngx MACHINE PORT [reload]: start (or reload) that machine's nginx; 0 once it listens with 2 workers
    local old=""
    if [ "${3:-}" = reload ]; then
        old=$(pgrep -P "$(cat "$WORK/$1/nginx.pid")")
        on "$1" env OPENSSL_CONF="$WORK/engine-nginx.cnf" timeout 30 nginx -p "$WORK" -c "$WORK/$1/nginx.conf" -s reload 2>> "logs/$1-startup.log" || return 1
    else
        on "$1" env OPENSSL_CONF="$WORK/engine-nginx.cnf" timeout 60 nginx -p "$WORK" -c "$WORK/$1/nginx.conf" 2>> "logs/$1-startup.log" || return 1
    fi
    local w still
    for _ in $(seq 100); do
        still=0
        for w in $old; do kill -0 "$w" 2>/dev/null && still=1; done
        [ $still = 0 ] && [ -s "$WORK/$1/nginx.pid" ] && ss -Hltn "sport = :$2" | grep -q . && [ "$(workers "$1")" = 2 ] && break
        sleep 0.2
    done
    [ -s "$WORK/$1/nginx.pid" ] && CLEANUP_PIDS+=("$(cat "$WORK/$1/nginx.pid")")
    [ "$(workers "$1")" = 2 ]
}
ngx_stop() {
    local pf="$WORK/$1/nginx.pid" p w
    [ -s "$pf" ] || return 0
    p=$(cat "$pf"); w=$(pgrep -P "$p")
    kill "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" $w 2>/dev/null
}
trap 'ngx_stop a; ngx_stop b; cleanup' EXIT
C() {  # C PORT CERT: one new TLS connection + GET
    OPENSSL_CONF=/dev/null timeout 20 curl -sS --fail --resolve "localhost:$1:127.0.0.1" \
        --cacert "$2" -o /dev/null "https://localhost:$1/"
}
hs() {  # hs PORT CERT N: how many of N handshakes failed
    local bad=0 i
    for i in $(seq "$3"); do C "$1" "$2" 2>>curl.err || bad=$((bad + 1)); done
    echo "$bad"
}
conf a "$PORT_A" "$WORK/web-v1.pem" "$V1"; conf b "$PORT_B" "$WORK/web-v1.pem" "$V1"
for m in a b; do
    port=PORT_${m^^}
    if ngx "$m" "${!port}"; then pass "nginx on machine ${m^^} starts (master + 2 workers), key web version 1"
    else fail "nginx on machine ${m^^} starts"; tail -n 3 "logs/$m-startup.log" | sed 's/^/    | /' >&2; fi
done
for m in a b; do
    port=PORT_${m^^}
    bad=$(hs "${!port}" web-v1.pem 10)
    [ "$bad" = 0 ] && pass "machine ${m^^}: 10 handshakes with the pool's key" || fail "machine ${m^^}: 10 handshakes with the pool's key ($bad failed)"
done

# connections: at most one per process, opened by the first call that needs the pool
PSQL="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/psql"
held() {  # held PID...: the PostgreSQL sessions each process holds
    local p
    for p in "$@"; do "$PSQL" -qXAt "$URL" -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'softmhsm $p'"; done | tr '\n' ' '
}
for m in a b; do
    master=$(cat "$WORK/$m/nginx.pid"); held_m=$(held "$master"); held_w=$(held $(pgrep -P "$master"))
    if [ -n "$held_w" ] && ! tr ' ' '\n' <<< "$held_m $held_w" | grep -qE '^([2-9]|[0-9]{2,})$'; then
        pass "machine ${m^^}: at most one PostgreSQL connection per nginx process (master: $held_m; workers: $held_w)"
    else fail "machine ${m^^}: at most one PostgreSQL connection per nginx process (master: $held_m; workers: $held_w)"; fi
done
orphans=0
for app in $("$PSQL" -qXAt "$URL" -c "SELECT replace(application_name, 'softmhsm ', '') FROM pg_stat_activity WHERE application_name LIKE 'softmhsm %'"); do
    kill -0 "$app" 2>/dev/null || orphans=$((orphans + 1))
done
# nginx's first process loads the key (connecting), forks the master and exits: the master's copy of
# that socket is closed as the master starts (a fork handler), so the session ends with that process
[ "$orphans" = 0 ] && pass "no session outlives its process (nginx's first process connected, forked the master and exited)" \
    || fail "no session outlives its process: $orphans held open only by an inherited socket"

# rotate on A (the CLI); B finds the new version; both adopt it by a reload with its certificate
if CLIP key rotate --name web > rotate.json 2> rotate.err && V2=$(kid_version < rotate.json) && [ ${#V2} = 32 ] && [ "$V2" != "$V1" ]; then
    pass "machine A: key rotate --name web (version $V1 -> $V2)"
else fail "machine A: key rotate --name web"; tail -n 3 rotate.err | sed 's/^/    | /' >&2; V2=; fi
check "machine B signs a certificate with the new version, at once" cert b "$V2" web-v2.pem
PUB_V1=$(cert_pub web-v1.pem); PUB_V2=$(cert_pub web-v2.pem)
[ "$PUB_V2" != "$EMPTY_SHA" ] && [ "$PUB_V2" != "$PUB_V1" ] && pass "the new version is another key" || fail "the new version is another key"
for m in a b; do
    port=PORT_${m^^}
    [ "$(served_pub "${!port}")" = "$PUB_V1" ] && pass "machine ${m^^} serves version 1 until told otherwise (its handle names that version)" \
        || fail "machine ${m^^} serves version 1 until told otherwise"
    conf "$m" "${!port}" "$WORK/web-v2.pem" "$V2"
    if ngx "$m" "${!port}" reload; then pass "machine ${m^^}: nginx -s reload with the new version"
    else fail "machine ${m^^}: nginx -s reload with the new version"; tail -n 3 "logs/$m-startup.log" | sed 's/^/    | /' >&2; fi
    bad=$(hs "${!port}" web-v2.pem 10)
    if [ "$bad" = 0 ] && [ "$(served_pub "${!port}")" = "$PUB_V2" ]; then pass "machine ${m^^}: 10 handshakes serve the new version"
    else fail "machine ${m^^}: 10 handshakes serve the new version ($bad failed)"; fi
done

# disable on A: both refuse within the bound; re-enable: both serve again
bound_ms=1000
refused_before=$(cat logs/a-error.log logs/b-error.log | grep -c 'SSL_do_handshake() failed')
CLIP key update --name web --enabled false > /dev/null 2> disable.err || { fail "machine A: key update --enabled false"; cat disable.err >&2; }
t0=$(date +%s%N)
for m in a b; do
    port=PORT_${m^^}
    # each worker has its own cache: 8 handshakes reach both (reuseport), every one must fail
    first_fail=""; tries=0
    while :; do
        tries=$((tries + 1))
        if ! C "${!port}" web-v2.pem 2>/dev/null; then first_fail=$(( ($(date +%s%N) - t0) / 1000000 )); break; fi
        [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt $((bound_ms + 2000)) ] && break
    done
    bad=$(hs "${!port}" web-v2.pem 8)
    if [ -n "$first_fail" ] && [ "$first_fail" -le "$bound_ms" ] && [ "$bad" = 8 ]; then
        pass "machine ${m^^}: the disabled key is refused within ${bound_ms} ms (handshake $tries on this machine failed, ${first_fail} ms after the CLI returned; 8 of 8 after)"
    else fail "machine ${m^^}: the disabled key is refused within ${bound_ms} ms (first failure: ${first_fail:-none} ms; $bad of 8 failed after)"; fi
done
refused=$(cat logs/a-error.log logs/b-error.log | grep -c 'SSL_do_handshake() failed')
[ "$refused" -gt "$refused_before" ] && pass "the refused handshakes are in the nginx error logs ($((refused - refused_before)) SSL_do_handshake() failures)" \
    || fail "the refused handshakes are in the nginx error logs"
CLIP key update --name web --enabled true > /dev/null 2> enable.err || { fail "machine A: key update --enabled true"; cat enable.err >&2; }
sleep $(( bound_ms / 1000 + 1 ))
for m in a b; do
    port=PORT_${m^^}
    bad=$(hs "${!port}" web-v2.pem 8)
    [ "$bad" = 0 ] && pass "machine ${m^^}: re-enabled, 8 handshakes succeed" || fail "machine ${m^^}: re-enabled, 8 handshakes succeed ($bad failed)"
done
audit_a=$(find "$WORK/a/token" -type f | wc -l); audit_b=$(find "$WORK/b/token" -type f | wc -l)
echo "    local state: machine A $audit_a files, machine B $audit_b files (the pool is in PostgreSQL)"
ngx_stop a; ngx_stop b
if grep -hE '\[(emerg|alert)\]|exited on signal' logs/*-error.log logs/*-startup.log >/dev/null 2>&1; then
    fail "nginx logs have no [emerg]/[alert] and no crashed worker"; grep -hE '\[(emerg|alert)\]|exited on signal' logs/*.log | head -n 5 >&2
else pass "nginx logs have no [emerg]/[alert] and no crashed worker"; fi
finish
