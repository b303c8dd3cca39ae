//! The deterministic variant of ML-DSA signing (FIPS 204 Algorithm 2 with
//! rnd = {0}³², and Algorithm 7 over a given μ for HashML-DSA and external
//! μ), which PKCS#11 3.2 asks for with `CKH_DETERMINISTIC_REQUIRED`.
//! aws-lc exports no call for it (its public API and aws-lc-sys's bindings
//! sign hedged only), so this variant alone runs on RustCrypto's `ml-dsa`
//! crate; every hedged signature and every verification stays on aws-lc.

use super::{MlDsa, ML_DSA_MU_LEN};
use crate::error::{Error, Result};
use cryptoki_sys::{CKR_DATA_LEN_RANGE, CKR_FUNCTION_FAILED};
use ml_dsa::common::array::Array;
use ml_dsa::common::typenum::U64;
use ml_dsa::{ExpandedSigningKey, MlDsa44, MlDsa65, MlDsa87, Seed};
use zeroize::Zeroizing;

/// An ML-DSA private key expanded from its seed by RustCrypto's `ml-dsa`
/// (zeroized on drop: the crate's `zeroize` feature).
pub enum DeterministicSigner {
    /// ML-DSA-44.
    P44(Box<ExpandedSigningKey<MlDsa44>>),
    /// ML-DSA-65.
    P65(Box<ExpandedSigningKey<MlDsa65>>),
    /// ML-DSA-87.
    P87(Box<ExpandedSigningKey<MlDsa87>>),
}

impl DeterministicSigner {
    /// FIPS 204 `ML-DSA.KeyGen_internal(ξ)` for `set`; `seed` is ξ (32 bytes).
    pub fn from_seed(set: MlDsa, seed: &[u8]) -> Result<DeterministicSigner> {
        let xi = Zeroizing::new(Seed::try_from(seed).map_err(|_| Error(CKR_FUNCTION_FAILED))?);
        Ok(match set {
            MlDsa::P44 => DeterministicSigner::P44(Box::new(ExpandedSigningKey::from_seed(&xi))),
            MlDsa::P65 => DeterministicSigner::P65(Box::new(ExpandedSigningKey::from_seed(&xi))),
            MlDsa::P87 => DeterministicSigner::P87(Box::new(ExpandedSigningKey::from_seed(&xi))),
        })
    }

    /// The deterministic signature of `message` under `context` (at most
    /// 255 bytes; the crate refuses more).
    pub fn sign(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let failed = |_| Error(CKR_FUNCTION_FAILED);
        Ok(match self {
            DeterministicSigner::P44(k) => k
                .sign_deterministic(message, context)
                .map_err(failed)?
                .encode()
                .to_vec(),
            DeterministicSigner::P65(k) => k
                .sign_deterministic(message, context)
                .map_err(failed)?
                .encode()
                .to_vec(),
            DeterministicSigner::P87(k) => k
                .sign_deterministic(message, context)
                .map_err(failed)?
                .encode()
                .to_vec(),
        })
    }

    /// The deterministic signature over μ ([`ML_DSA_MU_LEN`] bytes, else
    /// `CKR_DATA_LEN_RANGE`): FIPS 204 Algorithm 7 from step 7, rnd = {0}³².
    pub fn sign_mu(&self, mu: &[u8]) -> Result<Vec<u8>> {
        let mu: Array<u8, U64> = Array::try_from(mu)
            .ok()
            .filter(|_| mu.len() == ML_DSA_MU_LEN)
            .ok_or(Error(CKR_DATA_LEN_RANGE))?;
        // The crate's μ signing panics when its rejection loop runs out of
        // nonces (about 2^16 / ℓ tries, each passing with probability
        // above 1/5: never in practice); a panic here is a failed signature.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self {
            DeterministicSigner::P44(k) => k.sign_mu_deterministic(&mu).encode().to_vec(),
            DeterministicSigner::P65(k) => k.sign_mu_deterministic(&mu).encode().to_vec(),
            DeterministicSigner::P87(k) => k.sign_mu_deterministic(&mu).encode().to_vec(),
        }))
        .map_err(|_| Error(CKR_FUNCTION_FAILED))
    }
}
