/*
 * softmhsm vendor extensions to PKCS#11.
 *
 * softmhsm behaves like an Azure Key Vault Managed HSM pool. PKCS#11 has no
 * attribute for part of the Managed HSM key model; these vendor-defined
 * attributes carry it. Values are in the CKA_VENDOR_DEFINED range, prefixed
 * 0x534D ("SM").
 *
 * Types: CK_BBOOL is one byte; "string" is UTF-8 without a terminating NUL;
 * "IntDate" is a CK_ULONG holding seconds since the Unix epoch (0 = not set).
 */
#ifndef SOFTMHSM_H
#define SOFTMHSM_H

#define CKA_SOFTMHSM_BASE            (0x80000000UL | 0x534D0000UL)

/* string, read-only: the key's Managed HSM name (CKA_LABEL when the label
 * follows the naming rule, else a generated "p11-<32 hex>"). */
#define CKA_SOFTMHSM_NAME            (CKA_SOFTMHSM_BASE + 0x01)
/* string: the 32-hex version id. Read-only on objects; in a C_FindObjectsInit
 * template it selects that version (otherwise only current versions match). */
#define CKA_SOFTMHSM_VERSION         (CKA_SOFTMHSM_BASE + 0x02)
/* string, read-only: softmhsm://<token-label>/keys/<name>/<version> */
#define CKA_SOFTMHSM_KID             (CKA_SOFTMHSM_BASE + 0x03)
/* CK_BBOOL: JWK attributes.enabled; FALSE blocks every crypto operation. */
#define CKA_SOFTMHSM_ENABLED         (CKA_SOFTMHSM_BASE + 0x04)
/* IntDate: attributes.nbf (not before), second precision. */
#define CKA_SOFTMHSM_NBF             (CKA_SOFTMHSM_BASE + 0x05)
/* IntDate: attributes.exp (expiry), second precision. */
#define CKA_SOFTMHSM_EXP             (CKA_SOFTMHSM_BASE + 0x06)
/* IntDate, read-only: attributes.created */
#define CKA_SOFTMHSM_CREATED         (CKA_SOFTMHSM_BASE + 0x07)
/* IntDate, read-only: attributes.updated */
#define CKA_SOFTMHSM_UPDATED         (CKA_SOFTMHSM_BASE + 0x08)
/* CK_BBOOL: key_ops contains "import" (a BYOK key-exchange key; excludes
 * every other operation, RSA only). Such a key does one thing:
 * C_UnwrapKey with CKM_RSA_AES_KEY_WRAP (CK_RSA_AES_KEY_WRAP_PARAMS with
 * ulAESKeyBits 128/192/256 and OAEP SHA-1 or SHA-256, same MGF1, no label);
 * the wrapped data is RSA-OAEP(AES key) || AES-KWP (RFC 5649) of the target:
 * PKCS#8 for RSA/EC, the key bytes for AES. No other key may use it. */
#define CKA_SOFTMHSM_IMPORT          (CKA_SOFTMHSM_BASE + 0x09)
/* string: the key's tags as a JSON object {"name":"value",...}. */
#define CKA_SOFTMHSM_TAGS            (CKA_SOFTMHSM_BASE + 0x0A)
/* CK_BBOOL, read-only: TRUE on the current version of a key. */
#define CKA_SOFTMHSM_CURRENT         (CKA_SOFTMHSM_BASE + 0x0B)
/* string, read-only: attributes.recoveryLevel */
#define CKA_SOFTMHSM_RECOVERY_LEVEL  (CKA_SOFTMHSM_BASE + 0x0C)

#endif /* SOFTMHSM_H */
