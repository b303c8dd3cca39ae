#!/usr/bin/env bash
# python-pkcs11 (PyPI) in a venv against softmhsm; signatures checked with `cryptography`.
source "$(dirname "$0")/common.sh"
need_pkgs opensc python3-venv
build_lib
fresh_token
cd "$WORK"
SO=12345678; PIN=1234
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }
if P --init-token --label pyconf --so-pin "$SO" >/dev/null 2>&1 \
    && P --init-pin --login --login-type so --so-pin "$SO" --pin "$PIN" >/dev/null 2>&1; then
    pass "setup: token (pkcs11-tool)"; else fail "setup: token (pkcs11-tool)"; fi
# one venv per run keeps the test hermetic; SOFTMHSM_PY_VENV reuses one
VENV="${SOFTMHSM_PY_VENV:-$WORK/venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" && timeout 900 "$VENV/bin/pip" install -q python-pkcs11 cryptography >pip.log 2>&1
fi
if "$VENV/bin/python" -c 'import pkcs11, cryptography' 2>/dev/null; then pass "setup: venv with python-pkcs11 and cryptography"
else fail "setup: venv with python-pkcs11 and cryptography"; tail -n 5 pip.log >&2; finish; exit 1; fi

cat > conform.py <<'PY'
import os, sys, traceback
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MGF, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

def check(name, fn):
    try:
        r = fn()
        if r is False:
            raise AssertionError("returned False")
        print("PASS", name, flush=True)
    except Exception as e:
        print("FAIL", name, flush=True)
        print("    | %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)

lib = pkcs11.lib(os.environ["MODULE"])
token = None
def get_token():
    global token
    token = lib.get_token(token_label="pyconf")
check("get_token by label", get_token)
if token is None:
    sys.exit(0)
session = token.open(user_pin=os.environ["PIN"], rw=True)
data = os.urandom(1000)
H = {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}

def rsa_pub(pub):
    n = int.from_bytes(pub[Attribute.MODULUS], "big")
    e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(e, n).public_key()

keys = {}
def gen_rsa(bits):
    def f():
        keys["rsa%d" % bits] = session.generate_keypair(KeyType.RSA, bits, label="pyrsa%d" % bits, store=True)
        assert keys["rsa%d" % bits][1][Attribute.SENSITIVE] is True
    return f
for bits in (2048, 3072):
    check("generate_keypair RSA-%d" % bits, gen_rsa(bits))

def rsa_sign_checks(name):
    if name not in keys:
        return
    pub, priv = keys[name]
    for h in (256, 384, 512):
        def v15(h=h):
            sig = priv.sign(data, mechanism=getattr(Mechanism, "SHA%d_RSA_PKCS" % h))
            rsa_pub(pub).verify(sig, data, padding.PKCS1v15(), H[h])
            assert pub.verify(data, sig, mechanism=getattr(Mechanism, "SHA%d_RSA_PKCS" % h))
        check("%s SHA%d_RSA_PKCS sign, verified by cryptography and token" % (name, h), v15)
        def pss(h=h):
            sig = priv.sign(data, mechanism=getattr(Mechanism, "SHA%d_RSA_PKCS_PSS" % h),
                            mechanism_param=(getattr(Mechanism, "SHA%d" % h), getattr(MGF, "SHA%d" % h), h // 8))
            rsa_pub(pub).verify(sig, data, padding.PSS(padding.MGF1(H[h]), h // 8), H[h])
        check("%s SHA%d_RSA_PKCS_PSS sign, verified by cryptography" % (name, h), pss)
for name in ("rsa2048", "rsa3072"):
    rsa_sign_checks(name)

CURVES = {"secp256r1": (ec.SECP256R1(), 256), "secp256k1": (ec.SECP256K1(), 256),
          "secp384r1": (ec.SECP384R1(), 384), "secp521r1": (ec.SECP521R1(), 512)}
def ec_pub(pub, curve):
    from asn1crypto.core import OctetString
    point = OctetString.load(pub[Attribute.EC_POINT]).native
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
def der_sig(raw):
    n = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:n], "big"), int.from_bytes(raw[n:], "big"))
for cname, (curve, h) in CURVES.items():
    def gen(cname=cname):
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(cname)}, local=True)
        keys[cname] = params.generate_keypair(store=True, label="pyec-" + cname)
    check("generate_keypair EC %s" % cname, gen)
    if cname not in keys:
        continue
    def sign(cname=cname, curve=curve, h=h):
        pub, priv = keys[cname]
        sig = priv.sign(data, mechanism=getattr(Mechanism, "ECDSA_SHA%d" % h))
        ec_pub(pub, curve).verify(der_sig(sig), data, ec.ECDSA(H[h]))
        assert pub.verify(data, sig, mechanism=getattr(Mechanism, "ECDSA_SHA%d" % h))
    check("EC %s ECDSA_SHA%d sign, verified by cryptography and token" % (cname, h), sign)
    def sign_digest(cname=cname, curve=curve, h=h):
        pub, priv = keys[cname]
        d = hashes.Hash(H[h]); d.update(data); digest = d.finalize()
        sig = priv.sign(digest, mechanism=Mechanism.ECDSA)
        ec_pub(pub, curve).verify(der_sig(sig), digest, ec.ECDSA(utils.Prehashed(H[h])))
    check("EC %s ECDSA (prehashed SHA-%d) sign, verified by cryptography" % (cname, h), sign_digest)

from pkcs11 import MechanismFlag as F
for bits in (128, 192, 256):
    # python-pkcs11's default template (it asks CKA_SIGN/CKA_VERIFY=TRUE too)
    def gen_aes(bits=bits):
        k = session.generate_key(KeyType.AES, bits, label="pydefaes%d" % bits, store=True)
        assert k[Attribute.VALUE_LEN] == bits // 8
    check("generate_key AES-%d (python-pkcs11 default template)" % bits, gen_aes)
    def gen_aes_enc(bits=bits):
        keys["aes%d" % bits] = session.generate_key(KeyType.AES, bits, label="pyaes%d" % bits, store=True,
                                                    capabilities=F.ENCRYPT | F.DECRYPT | F.WRAP | F.UNWRAP)
        assert keys["aes%d" % bits][Attribute.VALUE_LEN] == bits // 8
    check("generate_key AES-%d (encrypt/decrypt/wrap/unwrap)" % bits, gen_aes_enc)
def aes_roundtrip():
    k = keys["aes256"]
    iv = os.urandom(16)
    ct = k.encrypt(data, mechanism_param=iv)            # CKM_AES_CBC_PAD
    assert k.decrypt(ct, mechanism_param=iv) == data
check("AES-256 CBC_PAD encrypt/decrypt round trip", aes_roundtrip)
def aes_import_kat():
    raw = os.urandom(32)
    k = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                               Attribute.VALUE: raw, Attribute.TOKEN: True, Attribute.LABEL: "pyaesimp",
                               Attribute.ENCRYPT: True, Attribute.DECRYPT: True})
    iv = os.urandom(16)
    ct = k.encrypt(data[:992], mechanism=Mechanism.AES_CBC, mechanism_param=iv)
    e = Cipher(algorithms.AES(raw), modes.CBC(iv)).encryptor()
    assert ct == e.update(data[:992]) + e.finalize()
check("imported AES-256 CBC encrypt matches cryptography", aes_import_kat)
def aes_kw_is_wrapkey():
    # The Managed HSM's wrapKey/unwrapKey of the caller's bytes (a DEK):
    # C_Encrypt/C_Decrypt with CKM_AES_KEY_WRAP, against cryptography's RFC 3394.
    from cryptography.hazmat.primitives import keywrap
    raw, dek = os.urandom(32), os.urandom(32)
    k = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                               Attribute.VALUE: raw, Attribute.TOKEN: True, Attribute.LABEL: "pykek",
                               Attribute.WRAP: True, Attribute.UNWRAP: True})
    assert k.encrypt(dek, mechanism=Mechanism.AES_KEY_WRAP) == keywrap.aes_key_wrap(raw, dek)
    assert k.decrypt(keywrap.aes_key_wrap(raw, dek), mechanism=Mechanism.AES_KEY_WRAP) == dek
check("AES-KW encrypt/decrypt (wrapKey/unwrapKey of a DEK) matches cryptography", aes_kw_is_wrapkey)
def oaep():
    pub, priv = keys["rsa2048"]
    ct = rsa_pub(pub).encrypt(b"secret", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    pt = priv.decrypt(ct, mechanism=Mechanism.RSA_PKCS_OAEP,
                      mechanism_param=(Mechanism.SHA256, MGF.SHA256, None))
    assert pt == b"secret"
check("RSA-2048 OAEP-SHA256 decrypt of cryptography ciphertext", oaep)

def iterate():
    labels = {o[Attribute.LABEL] for o in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})}
    want = {"pyrsa2048", "pyrsa3072", "pyec-secp256r1", "pyec-secp256k1", "pyec-secp384r1", "pyec-secp521r1"}
    assert want <= labels, "missing %s" % (want - labels)
    secret = {o[Attribute.LABEL] for o in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})}
    assert {"pyaes128", "pyaes192", "pyaes256"} <= secret, secret
    n = sum(1 for _ in session.get_objects())
    assert n >= 6 * 2 + 3, n
check("get_objects iterates private, public and secret keys", iterate)
def by_label():
    k = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="pyrsa2048")
    assert k.key_type == KeyType.RSA
check("get_key by label finds exactly one key", by_label)
def digest():
    d = hashes.Hash(hashes.SHA384()); d.update(data)
    assert session.digest(data, mechanism=Mechanism.SHA384) == d.finalize()
check("digest SHA384", digest)
def rand():
    assert len(session.generate_random(256)) == 32
check("generate_random", rand)
session.close()
PY
MODULE="$MODULE" PIN="$PIN" timeout 600 "$VENV/bin/python" conform.py > py.out
rc=$?
cat py.out
PASSED=$((PASSED + $(grep -c '^PASS ' py.out)))
FAILED=$((FAILED + $(grep -c '^FAIL ' py.out)))
[ $rc -eq 0 ] && pass "python exits cleanly" || fail "python exits cleanly (rc=$rc)"
finish
