//! Shamir secret sharing over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1),
//! byte by byte: the security domain is split into `n` shares of which any
//! `m` recombine it and fewer tell nothing about it.
//!
//! Written here rather than taken from a crate: the crates.io candidates were
//! either unmaintained since 2021 (`sharks`), a small fork of it (`blahaj`),
//! both multiplying through log/exp tables whose secret-dependent lookups leak
//! through the cache, or a large prime-field library (`vsss-rs`, with its
//! bigint and elliptic-curve trees) for what is 60 lines of field arithmetic.
//! Multiplication here is table-free and branch-free (shift-and-add with
//! masks), so its time does not depend on the secret; every buffer that holds
//! the secret or a coefficient is wiped on drop.

use super::seal::fill_random;
use super::SecretBytes;
use crate::error::{Error, Result};
use cryptoki_sys::CKR_ARGUMENTS_BAD;
use zeroize::Zeroizing;

/// The most shares a secret is split into (the Managed HSM's limit is 10; the field allows 255).
pub const MAX_SHARES: usize = 10;

/// One share: its x coordinate (1..=255, public) and one y byte per secret byte.
pub struct Share {
    /// The share index (the point's x coordinate; never 0, which is the secret).
    pub x: u8,
    /// The polynomials' values at `x`, one per secret byte.
    pub y: SecretBytes,
}

impl std::fmt::Debug for Share {
    /// Redacted: a share's bytes never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x={}, ..)", self.x)
    }
}

/// Multiplication in GF(2^8), in constant time: no table, no branch on data.
fn mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut r) = (a, b, 0u8);
    for _ in 0..8 {
        r ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    r
}

/// The multiplicative inverse (a^254; 0 maps to 0), by a fixed chain of
/// squarings and multiplications.
fn inv(a: u8) -> u8 {
    let mut r = a; // a^1
    for _ in 0..6 {
        r = mul(mul(r, r), a); // a^(2k+1): 3, 7, 15, 31, 63, 127
    }
    mul(r, r) // a^254
}

/// Split `secret` into `n` shares, any `m` of which recombine it
/// (2 ≤ m ≤ n ≤ [`MAX_SHARES`]); share `i` has x = i (1-based).
pub fn split(secret: &[u8], m: usize, n: usize) -> Result<Vec<Share>> {
    if !(2..=n).contains(&m) || n > MAX_SHARES || secret.is_empty() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let mut shares: Vec<Share> = (1..=n as u8)
        .map(|x| Share {
            x,
            y: SecretBytes::new(vec![0; secret.len()]),
        })
        .collect();
    // coefficients[1..m] of one byte's polynomial; coefficient 0 is the byte.
    let mut coefficients = Zeroizing::new(vec![0u8; m]);
    for (i, &byte) in secret.iter().enumerate() {
        coefficients[0] = byte;
        fill_random(&mut coefficients[1..])?;
        for share in &mut shares {
            // Horner: ((c[m-1] x + c[m-2]) x + …) x + c[0].
            let mut y = 0u8;
            for &c in coefficients.iter().rev() {
                y = mul(y, share.x) ^ c;
            }
            share.y[i] = y;
        }
    }
    Ok(shares)
}

/// Recombine a secret from `shares` made by [`split`] with quorum `m`.
/// Refused (`CKR_ARGUMENTS_BAD`): fewer than `m` shares, a share index 0 or
/// given twice, shares of different lengths. Shares beyond `m` are not used.
/// A wrong share is not detected here: the result is simply another value,
/// which the caller's own integrity check refuses.
pub fn combine(shares: &[Share], m: usize) -> Result<SecretBytes> {
    if m < 2 || shares.len() < m {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let len = shares[0].y.len();
    for (i, s) in shares.iter().enumerate() {
        if s.x == 0 || s.y.len() != len || shares[..i].iter().any(|t| t.x == s.x) {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
    }
    let used = &shares[..m];
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); minus is xor.
    let basis: Vec<u8> = used
        .iter()
        .map(|si| {
            used.iter()
                .filter(|sj| sj.x != si.x)
                .fold(1u8, |acc, sj| mul(acc, mul(sj.x, inv(sj.x ^ si.x))))
        })
        .collect();
    let mut secret = SecretBytes::new(vec![0u8; len]);
    for (s, &l) in used.iter().zip(&basis) {
        for (out, &y) in secret.iter_mut().zip(s.y.iter()) {
            *out ^= mul(y, l);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(len: usize) -> Vec<u8> {
        let mut s = vec![0u8; len];
        fill_random(&mut s).unwrap();
        s
    }

    fn copy(s: &Share) -> Share {
        Share {
            x: s.x,
            y: s.y.clone(),
        }
    }

    /// Every subset of `0..n` with `k` members, as index lists.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|b| b.count_ones() as usize == k)
            .map(|b| (0..n).filter(|i| b & (1 << i) != 0).collect())
            .collect()
    }

    /// Slow reference multiplication: carry-less product reduced bit by bit.
    fn mul_reference(a: u8, b: u8) -> u8 {
        let mut p: u16 = 0;
        for i in 0..8 {
            if b & (1 << i) != 0 {
                p ^= (a as u16) << i;
            }
        }
        for i in (8..16).rev() {
            if p & (1 << i) != 0 {
                p ^= 0x11b << (i - 8);
            }
        }
        p as u8
    }

    #[test]
    fn multiplication_matches_the_reference_for_every_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_reference(a, b), "{a} * {b}");
            }
        }
        // FIPS 197 §4.2: {57} • {83} = {c1}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
    }

    #[test]
    fn every_nonzero_element_has_its_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(inv(0), 0);
    }

    #[test]
    fn every_quorum_subset_recombines_for_small_n() {
        let s = secret(48);
        for n in 2..=7 {
            for m in 2..=n {
                let shares = split(&s, m, n).unwrap();
                for k in m..=n {
                    for subset in subsets(n, k) {
                        let picked: Vec<Share> = subset.iter().map(|&i| copy(&shares[i])).collect();
                        assert_eq!(
                            &combine(&picked, m).unwrap()[..],
                            &s[..],
                            "m={m} n={n} {subset:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn random_quorum_subsets_recombine_up_to_ten_shares() {
        let s = secret(64);
        for n in 8..=MAX_SHARES {
            for m in 2..=n {
                let shares = split(&s, m, n).unwrap();
                for _ in 0..20 {
                    // A random permutation's first m (random order too).
                    let mut order: Vec<usize> = (0..n).collect();
                    for i in (1..n).rev() {
                        let mut r = [0u8; 1];
                        fill_random(&mut r).unwrap();
                        order.swap(i, r[0] as usize % (i + 1));
                    }
                    let picked: Vec<Share> = order[..m].iter().map(|&i| copy(&shares[i])).collect();
                    assert_eq!(&combine(&picked, m).unwrap()[..], &s[..], "m={m} n={n}");
                }
            }
        }
    }

    #[test]
    fn fewer_shares_than_the_quorum_are_refused() {
        let s = secret(32);
        let shares = split(&s, 3, 5).unwrap();
        let two: Vec<Share> = shares[..2].iter().map(copy).collect();
        assert_eq!(combine(&two, 3).unwrap_err(), Error(CKR_ARGUMENTS_BAD));
    }

    #[test]
    fn below_the_quorum_interpolation_gives_another_value() {
        // Told the wrong quorum, m-1 shares interpolate a polynomial of too low
        // a degree: the value at 0 is not the secret.
        let s = secret(32);
        for m in 3..=MAX_SHARES {
            let shares = split(&s, m, MAX_SHARES).unwrap();
            let fewer: Vec<Share> = shares[..m - 1].iter().map(copy).collect();
            assert_ne!(&combine(&fewer, m - 1).unwrap()[..], &s[..], "m={m}");
        }
    }

    #[test]
    fn duplicate_share_indexes_are_refused() {
        let shares = split(&secret(32), 2, 3).unwrap();
        let twice = [copy(&shares[0]), copy(&shares[0])];
        assert_eq!(combine(&twice, 2).unwrap_err(), Error(CKR_ARGUMENTS_BAD));
        let mut zero = copy(&shares[1]);
        zero.x = 0;
        assert_eq!(
            combine(&[copy(&shares[0]), zero], 2).unwrap_err(),
            Error(CKR_ARGUMENTS_BAD)
        );
    }

    #[test]
    fn shares_of_different_lengths_are_refused() {
        let shares = split(&secret(32), 2, 3).unwrap();
        let mut short = copy(&shares[1]);
        short.y.pop();
        assert_eq!(
            combine(&[copy(&shares[0]), short], 2).unwrap_err(),
            Error(CKR_ARGUMENTS_BAD)
        );
    }

    #[test]
    fn bad_quorums_are_refused() {
        let s = secret(32);
        for (m, n) in [(1, 3), (4, 3), (2, MAX_SHARES + 1), (0, 0)] {
            assert_eq!(
                split(&s, m, n).unwrap_err(),
                Error(CKR_ARGUMENTS_BAD),
                "{m} of {n}"
            );
        }
        assert_eq!(split(&[], 2, 3).unwrap_err(), Error(CKR_ARGUMENTS_BAD));
    }

    #[test]
    fn one_share_alone_says_nothing_of_a_constant_secret() {
        // With m = 2 a share byte is c0 ^ c1·x with c1 uniform: over many splits
        // of the same secret, share 1's first byte takes many values.
        let s = [0x42u8; 32];
        let seen: std::collections::BTreeSet<u8> =
            (0..64).map(|_| split(&s, 2, 3).unwrap()[0].y[0]).collect();
        assert!(seen.len() > 16, "{}", seen.len());
    }
}
