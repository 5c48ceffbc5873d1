//! A `jsonwebtoken` [`CryptoProvider`] on *ring*, verification only.
//!
//! `jsonwebtoken` 12 ships providers on aws-lc-rs and on the RustCrypto
//! crates. The cells already link *ring* (rustls' provider), so verifying
//! with it adds no second crypto library and no C build (aws-lc), and avoids
//! the `rsa` crate's timing advisory (RUSTSEC-2023-0071) that the RustCrypto
//! provider brings. Only what a resource server needs is here: RS256, PS256
//! and ES256 signature checks. Every other algorithm, HMAC included, is
//! refused by the factory itself, so a token signed with the public key as
//! an HMAC secret can never verify. Signing is refused too: the cells never
//! issue tokens.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result, new_error};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, RsaParameters,
    RsaPublicKeyComponents, UnparsedPublicKey,
};

/// The provider; installed once per process by [`install`].
pub(crate) static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] the process's `jsonwebtoken` provider. Idempotent;
/// `false` if another provider was installed first (then tokens are not
/// verified with it: see [`installed`]).
pub(crate) fn install() -> bool {
    let _ = PROVIDER.install_default();
    installed()
}

/// Whether the process's provider is this one.
pub(crate) fn installed() -> bool {
    CryptoProvider::try_get_default().is_some_and(|p| std::ptr::eq(p, &PROVIDER))
}

fn signer_factory(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(new_error(ErrorKind::UnsupportedAlgorithm))
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let wrong_key = || new_error(ErrorKind::InvalidKeyFormat);
    match algorithm {
        Algorithm::RS256 | Algorithm::PS256 => {
            if key.family() != AlgorithmFamily::Rsa {
                return Err(wrong_key());
            }
            let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() else {
                return Err(wrong_key());
            };
            let parameters: &'static RsaParameters = if *algorithm == Algorithm::RS256 {
                &RSA_PKCS1_2048_8192_SHA256
            } else {
                &RSA_PSS_2048_8192_SHA256
            };
            Ok(Box::new(RsaVerifier {
                algorithm: *algorithm,
                parameters,
                n: n.clone(),
                e: e.clone(),
            }))
        }
        Algorithm::ES256 => {
            if key.family() != AlgorithmFamily::Ec {
                return Err(wrong_key());
            }
            let DecodingKeyKind::SecretOrDer(point) = key.kind() else {
                return Err(wrong_key());
            };
            Ok(Box::new(EcVerifier {
                point: point.clone(),
            }))
        }
        _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    }
}

struct RsaVerifier {
    algorithm: Algorithm,
    parameters: &'static RsaParameters,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        // ring refuses moduli under 2048 bits for these parameters.
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(self.parameters, message, signature)
        .map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct EcVerifier {
    /// The uncompressed point, `0x04 ‖ x ‖ y`.
    point: Vec<u8>,
}

impl Verifier<Vec<u8>> for EcVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for EcVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}
