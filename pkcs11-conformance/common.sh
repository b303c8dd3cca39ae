# Shared helpers for the pkcs11-conformance scripts; sourced, not run.
# Each script stays self-contained: it sources this file from its own directory.
set -u
CONF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CONF_DIR/.." && pwd)"
MODULE="$REPO_ROOT/target/release/libsoftmhsm.so"
SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
PASSED=0
FAILED=0
CLEANUP_PIDS=()
CLEANUP_DIRS=()

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
# check NAME CMD...: PASS when CMD exits 0; on FAIL show the last lines of its output.
check() {
    local name="$1"; shift
    local out
    local t=()
    [ "$(type -t "$1")" = file ] && t=(timeout 120)
    if out=$("${t[@]}" "$@" 2>&1); then pass "$name"
    else fail "$name"; printf '%s\n' "$out" | tail -n 5 | sed 's/^/    | /' >&2; fi
}
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
cleanup() {
    local p d
    for p in "${CLEANUP_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for d in "${CLEANUP_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# need_pkgs PKG...: apt-get install the missing ones.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >/dev/null; }
}

build_lib() {
    if [ -z "${SOFTMHSM_SKIP_BUILD:-}" ]; then
        (cd "$REPO_ROOT" && timeout 1800 cargo build --release --quiet) || { echo "cargo build failed" >&2; exit 2; }
    fi
    [ -f "$MODULE" ] || { echo "missing $MODULE" >&2; exit 2; }
}

# fresh_token: a new empty token directory, exported to the library.
fresh_token() {
    WORK=$(mktemp -d /tmp/softmhsm-conf.XXXXXX)
    CLEANUP_DIRS+=("$WORK")
    export SOFTMHSM_DIR="$WORK/token"
    mkdir -p "$SOFTMHSM_DIR"
    chmod 700 "$SOFTMHSM_DIR"
    export SOFTMHSM_KDF_ITERATIONS=1000
    unset SOFTMHSM_CONF
}

# nginx_http_common PREFIX: the http-block lines every nginx test shares: temp
# paths starting with PREFIX (not nginx's compiled-in ones, which need root),
# TLS 1.2/1.3, and no session resumption, so every handshake signs.
nginx_http_common() {
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s%s;\n' "$t" "$1" "${t#client_}"
    done
    printf '    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache off;\n    ssl_session_tickets off;\n'
}

# nginx_tls_server PORT CERT KEY-URI BODY: a TLS server block on 127.0.0.1:PORT
# (reuseport: the kernel spreads connections over the workers) whose private
# key nginx loads through the libp11 engine, answering BODY to every request.
nginx_tls_server() {
    printf '    server {\n        listen 127.0.0.1:%s ssl reuseport;\n        server_name localhost;\n' "$1"
    printf '        ssl_certificate %s;\n        ssl_certificate_key "engine:pkcs11:%s";\n' "$2" "$3"
    printf '        location / { return 200 "%s\\n"; }\n    }\n' "$4"
}

# free_port: a loopback TCP port nobody listens on
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}

# engine_cnf FILE INIT: an openssl.cnf that loads the libp11 engine on $MODULE
# with $PIN. INIT is the engine's `init` flag: 0 for the openssl command (it
# initialises an engine named with -engine itself), 1 for nginx (which does not
# ENGINE_init() an engine it finds by id: the config must).
engine_cnf() {
    cat > "$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
MODULE_PATH = $MODULE
PIN = $PIN
init = $2
CNF
}
