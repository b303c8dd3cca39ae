//! Why a case could not be measured on a module.

use std::fmt;

/// A PKCS#11 return code (or another reason) and the call that produced it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// `CKR_…` name, or a short reason when no PKCS#11 call failed.
    pub code: String,
    /// The call or step that failed, e.g. `C_SignInit`.
    pub during: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, during: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            during: during.into(),
        }
    }

    /// Fails with `code` during `during` unless `ok`.
    pub fn check(ok: bool, code: &str, during: &str) -> Result<(), Failure> {
        if ok {
            Ok(())
        } else {
            Err(Failure::new(code, during))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.code, self.during)
    }
}

/// Attaches the failing step to a `cryptoki` error.
pub trait During<T> {
    fn during(self, what: &str) -> Result<T, Failure>;
}

impl<T> During<T> for cryptoki::error::Result<T> {
    fn during(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code_name(&e), what))
    }
}

/// `CKR_MECHANISM_INVALID` for `RvError::MechanismInvalid`: cryptoki names its
/// return codes in CamelCase, the spec (and everyone reading the table) in CKR_ form.
fn code_name(error: &cryptoki::error::Error) -> String {
    use cryptoki::error::{Error, RvError};
    match error {
        Error::Pkcs11(RvError::VendorDefined(rv) | RvError::UnknownErrorCode(rv), _) => {
            format!("CKR_0x{rv:08X}")
        }
        Error::Pkcs11(rv, _) => {
            let camel = format!("{rv:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
        other => other.to_string(),
    }
}
