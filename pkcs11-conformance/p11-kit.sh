#!/usr/bin/env bash
# p11-kit and GnuTLS p11tool see the token through softmhsm.module, installed in
# a throwaway user configuration (HOME/XDG_CONFIG_HOME in the temp dir), so the
# system configuration is never touched. p11-kit ignores user configuration in a
# process running as root, so as root the p11-kit/GnuTLS clients run as `nobody`.
source "$(dirname "$0")/common.sh"
need_pkgs opensc p11-kit gnutls-bin
build_lib
fresh_token
cd "$WORK"
mkdir -p pub
SO=12345678; PIN=1234
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }
P --init-token --label p11kitconf --so-pin "$SO" >/dev/null 2>&1
P --init-pin --login --login-type so --so-pin "$SO" --pin "$PIN" >/dev/null 2>&1
P --login --pin "$PIN" --keypairgen --key-type rsa:2048 --label kitrsa --id 01 >/dev/null 2>&1
P --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --label kitec --id 02 >/dev/null 2>&1 \
    && pass "setup: token and keys (pkcs11-tool)" || fail "setup: token and keys (pkcs11-tool)"

export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config"
mkdir -p "$XDG_CONFIG_HOME/pkcs11/modules"
sed "s|^module:.*|module: $MODULE|" "$CONF_DIR/softmhsm.module" > "$XDG_CONFIG_HOME/pkcs11/modules/softmhsm.module"
AS=()
if [ "$(id -u)" = 0 ]; then
    chown -R nobody:nogroup "$WORK"
    AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
p11-kit() { timeout 60 "${AS[@]}" env HOME="$HOME" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" p11-kit "$@"; }
p11tool() { timeout 60 "${AS[@]}" env HOME="$HOME" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" GNUTLS_PIN="$PIN" GNUTLS_SO_PIN="$SO" p11tool "$@"; }
pkcs11-tool() { timeout 60 "${AS[@]}" env HOME="$HOME" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" pkcs11-tool "$@"; }
check "softmhsm.module names a module" grep -q '^module: ' "$CONF_DIR/softmhsm.module"

p11-kit list-modules > modules.txt 2>&1
check "p11-kit list-modules lists softmhsm" grep -q '^softmhsm:' modules.txt
check "p11-kit list-modules shows the library" grep -q "library-manufacturer: softmhsm" modules.txt
check "p11-kit list-modules shows the token" grep -q 'token: p11kitconf' modules.txt
check "p11-kit list-modules token manufacturer" eval "sed -n '/token: p11kitconf/,/^[^ ]/p' modules.txt | grep -q 'manufacturer: softmhsm'"

p11tool --list-tokens > tokens.txt 2>&1
check "p11tool --list-tokens sees the token" grep -q 'Label: p11kitconf' tokens.txt
check "p11tool token URL" grep -q 'URL: pkcs11:.*token=p11kitconf' tokens.txt
TOK="pkcs11:token=p11kitconf"
export GNUTLS_PIN="$PIN" GNUTLS_SO_PIN="$SO"
check "p11tool --list-all (public objects)" eval "p11tool --list-all '$TOK' | grep -q 'kitrsa'"
check "p11tool --login --list-privkeys" eval "p11tool --login --list-privkeys '$TOK' | grep -q 'object=kitec'"
check "p11tool --test-sign RSA" p11tool --login --test-sign "$TOK;object=kitrsa;type=private"
check "p11tool --test-sign EC" p11tool --login --test-sign "$TOK;object=kitec;type=private"
check "p11tool --export-pubkey RSA" eval "p11tool --export-pubkey '$TOK;object=kitrsa' > pub/kitrsa.pem && OPENSSL_CONF=/dev/null openssl pkey -pubin -in pub/kitrsa.pem -noout"
check "p11tool --generate-privkey ECDSA" p11tool --login --generate-privkey ECDSA --curve secp384r1 --label gnutlsec "$TOK"
# Managed HSM rule: a P-384 key signs SHA-384 digests only (p11tool's default SHA-256 is refused by design)
check "p11tool --test-sign --hash SHA384 generated P-384 key" p11tool --login --test-sign --hash SHA384 "$TOK;object=gnutlsec;type=private"
check "p11tool --generate-privkey RSA 2048" p11tool --login --generate-privkey RSA --bits 2048 --label gnutlsrsa "$TOK"
check "p11tool --test-sign generated RSA key" p11tool --login --test-sign "$TOK;object=gnutlsrsa;type=private"

# the p11-kit proxy module multiplexes the configured modules
PROXY=$(ls /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so 2>/dev/null | head -n 1)
check "p11-kit-proxy exposes the token to pkcs11-tool" eval "pkcs11-tool --module '$PROXY' --list-slots | grep -q 'token label *: p11kitconf'"
finish
