//! DER encoding of SubjectPublicKeyInfo for CKA_PUBLIC_KEY_INFO.
