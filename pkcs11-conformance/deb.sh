#!/usr/bin/env bash
# The Debian package (`cargo deb`, [package.metadata.deb] in Cargo.toml): build it,
# install it with apt-get, find the module through p11-kit without a path (the
# p11-kit proxy, `p11-kit list-modules`), sign through the proxy on a token the
# installed /usr/bin/softmhsm made, check the layout (multiarch library, stripped,
# p11-kit module file, conffile doing nothing), and remove the package.
# The proxy is /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so (package p11-kit-modules).
# Installs cargo-deb when missing (`cargo install --locked cargo-deb`).
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl p11-kit p11-kit-modules
build_lib   # cargo build --release (run.sh does it once); cargo deb packages what it built
command -v cargo-deb >/dev/null 2>&1 || timeout 900 cargo install --locked --quiet cargo-deb \
    || { echo "cannot install cargo-deb" >&2; exit 2; }
LIBDIR=/usr/lib/x86_64-linux-gnu
PROXY=$LIBDIR/p11-kit-proxy.so
WORK=$(mktemp -d /tmp/softmhsm-deb.XXXXXX)
CLEANUP_DIRS+=("$WORK")
# a package already installed (a developer's) is put back at exit
WAS_INSTALLED=
dpkg-query -W -f='${Status}' softmhsm 2>/dev/null | grep -q 'install ok installed' && WAS_INSTALLED=1
remove_pkg() { [ -z "$WAS_INSTALLED" ] && dpkg -s softmhsm >/dev/null 2>&1 && dpkg --purge softmhsm >/dev/null 2>&1; }
trap 'remove_pkg; cleanup' EXIT

t0=$SECONDS
if (cd "$REPO_ROOT" && timeout 600 cargo deb --no-build --fast --quiet --output "$WORK/" > "$WORK/deb.out" 2>&1); then
    DEB=$(ls "$WORK"/softmhsm_*.deb 2>/dev/null | head -n 1)
    pass "cargo deb builds the package ($((SECONDS - t0)) s): $(basename "$DEB")"
else fail "cargo deb builds the package"; tail -n 5 "$WORK/deb.out" | sed 's/^/    | /' >&2; finish; exit 1; fi
contents=$(dpkg-deb -c "$DEB" | awk '{print $6 ($7 ? " " $7 " " $8 : "")}')
for f in ./usr/lib/x86_64-linux-gnu/libsoftmhsm.so ./usr/bin/softmhsm ./usr/share/p11-kit/modules/softmhsm.module ./etc/softmhsm/softmhsm.toml; do
    grep -qx "$f" <<< "$contents" && pass "package holds $f" || fail "package holds $f"
done
grep -qx './usr/lib/x86_64-linux-gnu/pkcs11/libsoftmhsm.so -> ../libsoftmhsm.so' <<< "$contents" \
    && pass "package links the module into p11-kit's module directory" \
    || fail "package links the module into p11-kit's module directory"
dpkg-deb -I "$DEB" conffiles 2>/dev/null | grep -qx /etc/softmhsm/softmhsm.toml \
    && pass "/etc/softmhsm/softmhsm.toml is a conffile" || fail "/etc/softmhsm/softmhsm.toml is a conffile"
echo "    | $(du -k "$DEB" | cut -f1) KiB package; $(ls "$WORK"/*dbgsym* 2>/dev/null | xargs -r -n1 basename)"

if DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$DEB" > "$WORK/apt.out" 2>&1; then pass "apt-get install ./softmhsm_*.deb"
else fail "apt-get install ./softmhsm_*.deb"; tail -n 5 "$WORK/apt.out" | sed 's/^/    | /' >&2; fi
if file -L "$LIBDIR/libsoftmhsm.so" | grep -q 'not stripped' || readelf -S "$LIBDIR/libsoftmhsm.so" | grep -q '\.debug_info'; then
    fail "the installed library is stripped (no debug info)"
else pass "the installed library is stripped (no debug info): $(du -k "$LIBDIR/libsoftmhsm.so" | cut -f1) KiB"; fi

# everything below uses the installed files only; the packaged system file lists no
# token, so the per-user default applies: a throwaway HOME gives a fresh one
export HOME="$WORK/home" XDG_DATA_HOME= SOFTMHSM_KDF_ITERATIONS=1000
unset SOFTMHSM_DIR SOFTMHSM_CONF SOFTMHSM_STORE_URL XDG_DATA_HOME
mkdir -p "$HOME"
check "the packaged /etc/softmhsm/softmhsm.toml lists no token (as good as none)" bash -c '! grep -q "^\[\[token\]\]" /etc/softmhsm/softmhsm.toml'
check "/usr/bin/softmhsm init (per-user default store)" timeout 60 /usr/bin/softmhsm init --label debtoken --so-pin 12345678 --pin 1234
check "/usr/bin/softmhsm key create (P-256)" timeout 60 /usr/bin/softmhsm key create --name debkey --kty EC --pin 1234
check "/usr/bin/softmhsm key download" timeout 60 /usr/bin/softmhsm key download --name debkey --file "$WORK/debkey.pem" --pin 1234
out=$(timeout 60 p11-kit list-modules 2>&1)
if grep -q "^softmhsm:" <<< "$out" && grep -q "library-description: .*" <<< "$out" && grep -q "token: debtoken" <<< "$out"; then
    pass "p11-kit list-modules shows the softmhsm module and its token"
else fail "p11-kit list-modules shows the softmhsm module and its token"; grep -A6 '^softmhsm' <<< "$out" | head -n 8 | sed 's/^/    | /' >&2; fi
out=$(timeout 60 pkcs11-tool --module "$PROXY" -L 2>&1)
grep -q "token label *: debtoken" <<< "$out" && pass "pkcs11-tool --module p11-kit-proxy.so -L finds the token" \
    || { fail "pkcs11-tool --module p11-kit-proxy.so -L finds the token"; tail -n 5 <<< "$out" | sed 's/^/    | /' >&2; }
printf 'signed through the p11-kit proxy\n' > "$WORK/msg"
check "pkcs11-tool --sign ECDSA-SHA256 through p11-kit-proxy.so" timeout 60 pkcs11-tool --module "$PROXY" --token-label debtoken \
    --login --pin 1234 --sign --mechanism ECDSA-SHA256 --label debkey --signature-format openssl -i "$WORK/msg" -o "$WORK/msg.sig"
check "the signature verifies with key download's public key (plain openssl)" \
    env OPENSSL_CONF=/dev/null openssl dgst -sha256 -verify "$WORK/debkey.pem" -signature "$WORK/msg.sig" "$WORK/msg"

if [ -z "$WAS_INSTALLED" ]; then
    if timeout 120 dpkg --purge softmhsm > "$WORK/purge.out" 2>&1 && [ ! -e "$LIBDIR/libsoftmhsm.so" ] && [ ! -e /usr/share/p11-kit/modules/softmhsm.module ] && [ ! -e /usr/bin/softmhsm ]; then
        pass "dpkg --purge softmhsm removes the library, the module file and the command"
    else fail "dpkg --purge softmhsm removes the library, the module file and the command"; tail -n 3 "$WORK/purge.out" | sed 's/^/    | /' >&2; fi
    out=$(timeout 60 p11-kit list-modules 2>&1)
    grep -q "^softmhsm:" <<< "$out" && fail "p11-kit no longer lists softmhsm after removal" || pass "p11-kit no longer lists softmhsm after removal"
fi
echo "    | deb.sh took $((SECONDS - t0)) s"
finish
