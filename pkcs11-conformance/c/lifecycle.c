/* The operation lifecycle, session public keys and CKA_ALLOWED_MECHANISMS,
 * checked by a C program through the raw function list (issue 16, "How it
 * will be checked"). Usage: lifecycle MODULE.so — on an empty token directory
 * (SOFTMHSM_DIR), which it initialises. Prints one "PASS name" / "FAIL name"
 * line per check and exits 1 when any check fails, 2 when it cannot start. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static int failed;

static void check(const char *name, int ok)
{
    printf("%s %s\n", ok ? "PASS" : "FAIL", name);
    if (!ok)
        failed = 1;
}

/* check_rv: a check that a call answered exactly `want`. */
static void check_rv(const char *name, CK_RV got, CK_RV want)
{
    if (got != want)
        fprintf(stderr, "%s: got 0x%lx, want 0x%lx\n", name, got, want);
    check(name, got == want);
}

static void die(const char *what, CK_RV rv)
{
    fprintf(stderr, "%s: 0x%lx\n", what, rv);
    exit(2);
}

#define MUST(call)                              \
    do {                                        \
        CK_RV rv_ = (call);                     \
        if (rv_ != CKR_OK)                      \
            die(#call, rv_);                    \
    } while (0)

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_BYTE data[] = "abc";
#define DATA_LEN 3UL

/* SHA-256("abc"), FIPS 180-2 appendix B.1. */
static const CK_BYTE sha256_abc[32] = {
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};

static void digest_checks(CK_SESSION_HANDLE s)
{
    CK_MECHANISM m = {CKM_SHA256, NULL, 0};
    CK_BYTE out[64];
    CK_ULONG len = sizeof out;

    MUST(f->C_DigestInit(s, &m));
    check_rv("digest: C_Digest with a NULL length pointer is CKR_ARGUMENTS_BAD",
             f->C_Digest(s, data, DATA_LEN, out, NULL), CKR_ARGUMENTS_BAD);
    check_rv("digest: the error ended the operation (C_Digest: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_Digest(s, data, DATA_LEN, out, &len), CKR_OPERATION_NOT_INITIALIZED);
    check_rv("digest: a new C_DigestInit succeeds", f->C_DigestInit(s, &m), CKR_OK);
    len = sizeof out;
    CK_RV rv = f->C_Digest(s, data, DATA_LEN, out, &len);
    check("digest: then C_Digest gives SHA-256(\"abc\")",
          rv == CKR_OK && len == 32 && memcmp(out, sha256_abc, 32) == 0);

    MUST(f->C_DigestInit(s, &m));
    check_rv("digest: C_DigestUpdate with NULL data is CKR_ARGUMENTS_BAD",
             f->C_DigestUpdate(s, NULL, 5), CKR_ARGUMENTS_BAD);
    len = sizeof out;
    check_rv("digest: the error ended the operation (C_DigestFinal: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_DigestFinal(s, out, &len), CKR_OPERATION_NOT_INITIALIZED);

    MUST(f->C_DigestInit(s, &m));
    len = 0;
    check_rv("digest: C_Digest length query", f->C_Digest(s, data, DATA_LEN, NULL, &len), CKR_OK);
    len = sizeof out;
    check_rv("digest: after a C_Digest length query C_DigestFinal is CKR_OPERATION_ACTIVE",
             f->C_DigestFinal(s, out, &len), CKR_OPERATION_ACTIVE);
    check_rv("digest: which ended the operation", f->C_Digest(s, data, DATA_LEN, out, &len),
             CKR_OPERATION_NOT_INITIALIZED);
}

static CK_OBJECT_HANDLE aes_key(CK_SESSION_HANDLE s)
{
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG value_len = 32;
    CK_UTF8CHAR label[] = "c-aes";
    CK_ATTRIBUTE t[] = {
        {CKA_TOKEN, &no, sizeof no},
        {CKA_VALUE_LEN, &value_len, sizeof value_len},
        {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_LABEL, label, sizeof label - 1},
    };
    CK_OBJECT_HANDLE k;
    MUST(f->C_GenerateKey(s, &gen, t, sizeof t / sizeof t[0], &k));
    return k;
}

static void cipher_checks(CK_SESSION_HANDLE s)
{
    CK_BYTE iv[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof iv};
    CK_OBJECT_HANDLE k = aes_key(s);
    CK_BYTE ct[64], pt[64];
    CK_ULONG ct_len = sizeof ct, pt_len = sizeof pt;

    MUST(f->C_EncryptInit(s, &m, k));
    check_rv("encrypt: C_Encrypt with a NULL length pointer is CKR_ARGUMENTS_BAD",
             f->C_Encrypt(s, data, DATA_LEN, ct, NULL), CKR_ARGUMENTS_BAD);
    check_rv("encrypt: the error ended the operation (C_Encrypt: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_Encrypt(s, data, DATA_LEN, ct, &ct_len), CKR_OPERATION_NOT_INITIALIZED);
    check_rv("encrypt: a new C_EncryptInit succeeds", f->C_EncryptInit(s, &m, k), CKR_OK);
    ct_len = sizeof ct;
    CK_RV rv = f->C_Encrypt(s, data, DATA_LEN, ct, &ct_len);
    check("encrypt: then C_Encrypt gives one padded block", rv == CKR_OK && ct_len == 16);

    MUST(f->C_EncryptInit(s, &m, k));
    CK_ULONG n = sizeof pt;
    check_rv("encrypt: C_EncryptUpdate with NULL data is CKR_ARGUMENTS_BAD",
             f->C_EncryptUpdate(s, NULL, 16, pt, &n), CKR_ARGUMENTS_BAD);
    check_rv("encrypt: after that error C_EncryptInit starts anew (not CKR_OPERATION_ACTIVE)",
             f->C_EncryptInit(s, &m, k), CKR_OK);
    n = sizeof pt;
    f->C_Encrypt(s, data, DATA_LEN, pt, &n); /* end it */

    MUST(f->C_DecryptInit(s, &m, k));
    check_rv("decrypt: C_Decrypt with a NULL length pointer is CKR_ARGUMENTS_BAD",
             f->C_Decrypt(s, ct, ct_len, pt, NULL), CKR_ARGUMENTS_BAD);
    check_rv("decrypt: the error ended the operation (C_Decrypt: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_Decrypt(s, ct, ct_len, pt, &pt_len), CKR_OPERATION_NOT_INITIALIZED);
    check_rv("decrypt: a new C_DecryptInit succeeds", f->C_DecryptInit(s, &m, k), CKR_OK);
    pt_len = sizeof pt;
    rv = f->C_Decrypt(s, ct, ct_len, pt, &pt_len);
    check("decrypt: then C_Decrypt gives the plaintext back",
          rv == CKR_OK && pt_len == DATA_LEN && memcmp(pt, data, DATA_LEN) == 0);
}

/* A token key pair; `ec` true: P-256, else RSA-2048. */
static void key_pair(CK_SESSION_HANDLE s, int ec, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
    static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_ULONG bits = 2048;
    CK_BYTE e[] = {1, 0, 1};
    CK_MECHANISM gen = {ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_UTF8CHAR label_ec[] = "c-ec", label_rsa[] = "c-rsa";
    CK_UTF8CHAR *label = ec ? label_ec : label_rsa;
    CK_ULONG label_len = strlen((char *)label);
    CK_ATTRIBUTE pub_t[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, label, label_len},
        {ec ? CKA_EC_PARAMS : CKA_MODULUS_BITS, ec ? (void *)p256 : (void *)&bits,
         ec ? sizeof p256 : sizeof bits},
        {CKA_PUBLIC_EXPONENT, e, sizeof e},
    };
    CK_ATTRIBUTE priv_t[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_LABEL, label, label_len},
    };
    MUST(f->C_GenerateKeyPair(s, &gen, pub_t, ec ? 4 : 5, priv_t, 4, pub, priv));
}

static void sign_checks(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE ec_priv, CK_OBJECT_HANDLE ec_pub)
{
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    CK_BYTE sig[128];
    CK_ULONG len = sizeof sig;

    MUST(f->C_SignInit(s, &m, ec_priv));
    check_rv("sign: C_Sign with a NULL length pointer is CKR_ARGUMENTS_BAD",
             f->C_Sign(s, data, DATA_LEN, sig, NULL), CKR_ARGUMENTS_BAD);
    check_rv("sign: the error ended the operation (C_Sign: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_Sign(s, data, DATA_LEN, sig, &len), CKR_OPERATION_NOT_INITIALIZED);
    check_rv("sign: a new C_SignInit succeeds", f->C_SignInit(s, &m, ec_priv), CKR_OK);
    len = sizeof sig;
    CK_RV rv = f->C_Sign(s, data, DATA_LEN, sig, &len);
    check("sign: then C_Sign gives a 64-byte P-256 signature", rv == CKR_OK && len == 64);

    MUST(f->C_SignInit(s, &m, ec_priv));
    check_rv("sign: C_SignUpdate with NULL data is CKR_ARGUMENTS_BAD",
             f->C_SignUpdate(s, NULL, 5), CKR_ARGUMENTS_BAD);
    CK_ULONG n = sizeof sig;
    check_rv("sign: the error ended the operation (C_SignFinal: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_SignFinal(s, sig, &n), CKR_OPERATION_NOT_INITIALIZED);

    MUST(f->C_VerifyInit(s, &m, ec_pub));
    check_rv("verify: C_Verify with a NULL signature is CKR_ARGUMENTS_BAD",
             f->C_Verify(s, data, DATA_LEN, NULL, 64), CKR_ARGUMENTS_BAD);
    check_rv("verify: the error ended the operation (C_Verify: CKR_OPERATION_NOT_INITIALIZED)",
             f->C_Verify(s, data, DATA_LEN, sig, len), CKR_OPERATION_NOT_INITIALIZED);
    check_rv("verify: a new C_VerifyInit succeeds", f->C_VerifyInit(s, &m, ec_pub), CKR_OK);
    check_rv("verify: then C_Verify accepts the signature", f->C_Verify(s, data, DATA_LEN, sig, len),
             CKR_OK);
}

/* One attribute's value, malloc'd; NULL when it cannot be read. */
static CK_BYTE *attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE ty,
                          CK_ULONG *len)
{
    CK_ATTRIBUTE a = {ty, NULL, 0};
    if (f->C_GetAttributeValue(s, o, &a, 1) != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return NULL;
    a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
    if (!a.pValue || f->C_GetAttributeValue(s, o, &a, 1) != CKR_OK) {
        free(a.pValue);
        return NULL;
    }
    *len = a.ulValueLen;
    return a.pValue;
}

static void session_public_key_checks(CK_SESSION_HANDLE s)
{
    CK_OBJECT_HANDLE pub, priv, session_pub = CK_INVALID_HANDLE;
    CK_ULONG n_len = 0, e_len = 0;
    key_pair(s, 0, &pub, &priv);
    CK_BYTE *n = attribute(s, pub, CKA_MODULUS, &n_len);
    CK_BYTE *e = attribute(s, pub, CKA_PUBLIC_EXPONENT, &e_len);
    check("session public key: the token key's modulus and exponent read", n && e && n_len == 256);
    if (!n || !e)
        return;

    CK_OBJECT_CLASS class = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_RSA;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &class, sizeof class},
        {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_TOKEN, &no, sizeof no},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_MODULUS, n, n_len},
        {CKA_PUBLIC_EXPONENT, e, e_len},
    };
    check_rv("session public key: C_CreateObject(CKO_PUBLIC_KEY, CKA_TOKEN FALSE, modulus, exponent)",
             f->C_CreateObject(s, t, sizeof t / sizeof t[0], &session_pub), CKR_OK);
    CK_BBOOL token = CK_TRUE;
    CK_ATTRIBUTE tok = {CKA_TOKEN, &token, sizeof token};
    check("session public key: is a session object (CKA_TOKEN FALSE)",
          f->C_GetAttributeValue(s, session_pub, &tok, 1) == CKR_OK && token == CK_FALSE);

    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CK_BYTE sig[512];
    CK_ULONG len = sizeof sig;
    MUST(f->C_SignInit(s, &m, priv));
    MUST(f->C_Sign(s, data, DATA_LEN, sig, &len));
    MUST(f->C_VerifyInit(s, &m, session_pub));
    check_rv("session public key: verifies the token RSA key's CKM_SHA256_RSA_PKCS signature",
             f->C_Verify(s, data, DATA_LEN, sig, len), CKR_OK);
    sig[len / 2] ^= 1;
    MUST(f->C_VerifyInit(s, &m, session_pub));
    check_rv("session public key: refuses a tampered signature (CKR_SIGNATURE_INVALID)",
             f->C_Verify(s, data, DATA_LEN, sig, len), CKR_SIGNATURE_INVALID);
    free(n);
    free(e);
}

static void allowed_mechanisms_checks(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE ec_priv)
{
    CK_ULONG len = 0;
    CK_MECHANISM_TYPE *list = (CK_MECHANISM_TYPE *)attribute(s, ec_priv, CKA_ALLOWED_MECHANISMS, &len);
    check("CKA_ALLOWED_MECHANISMS of a P-256 key reads", list != NULL && len % sizeof(CK_MECHANISM_TYPE) == 0);
    int ecdsa = 0, rsa = 0;
    for (CK_ULONG i = 0; list && i < len / sizeof(CK_MECHANISM_TYPE); i++) {
        ecdsa |= list[i] == CKM_ECDSA;
        rsa |= list[i] == CKM_RSA_PKCS;
    }
    check("CKA_ALLOWED_MECHANISMS of a P-256 key lists CKM_ECDSA", ecdsa);
    check("CKA_ALLOWED_MECHANISMS of a P-256 key does not list CKM_RSA_PKCS", list && !rsa);
    free(list);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODULE.so\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (!get)
        die("dlsym(C_GetFunctionList)", 0);
    MUST(get(&f));
    MUST(f->C_Initialize(NULL));

    CK_SLOT_ID slots[8];
    CK_ULONG n_slots = 8;
    MUST(f->C_GetSlotList(CK_FALSE, slots, &n_slots));
    if (n_slots == 0)
        die("no slot", 0);
    CK_UTF8CHAR so[] = "12345678", pin[] = "1234", label[32];
    memset(label, ' ', sizeof label);
    memcpy(label, "c-lifecycle", 11);
    MUST(f->C_InitToken(slots[0], so, 8, label));
    CK_SESSION_HANDLE s;
    MUST(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
    MUST(f->C_Login(s, CKU_SO, so, 8));
    MUST(f->C_InitPIN(s, pin, 4));
    MUST(f->C_Logout(s));
    MUST(f->C_Login(s, CKU_USER, pin, 4));

    CK_OBJECT_HANDLE ec_pub, ec_priv;
    key_pair(s, 1, &ec_pub, &ec_priv);
    digest_checks(s);
    cipher_checks(s);
    sign_checks(s, ec_priv, ec_pub);
    session_public_key_checks(s);
    allowed_mechanisms_checks(s, ec_priv);

    MUST(f->C_CloseSession(s));
    MUST(f->C_Finalize(NULL));
    return failed;
}
