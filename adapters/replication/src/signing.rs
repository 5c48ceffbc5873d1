//! Origin signatures: each cell signs the events it originates with an
//! Ed25519 key only it holds, and a receiving cell applies an event only
//! when the signature verifies against a public key configured for the
//! event's origin. The replication key authenticates a delivery (Event
//! Grid, or a peer); the signature makes the event itself unforgeable, so
//! a leaked delivery key or a compromised topic cannot write as a cell.
//!
//! On the wire the signature travels with the CloudEvent as two extension
//! attributes: [`KEY_ID_ATTRIBUTE`] names the key, [`SIGNATURE_ATTRIBUTE`]
//! holds the signature (base64url, no padding). The signed bytes are
//! [`CONTEXT`], the key id, a newline and the event as twincell stores it
//! (`serde_json` of [`RecordedEvent`]: stream, version, time, type and
//! data), so a signature covers everything a cell applies, and binds the
//! key id. Signatures are not stored: a cell signs its events each time it
//! publishes them (a resync included), and whether a replay diverged is
//! decided on the events alone.
//!
//! Keys (Ed25519 through *ring*, which the TLS stack already brings):
//! - `TWINCELL_SIGNING_KEY` = `<key id>:<base64 PKCS#8>`: this cell's
//!   private key, as `openssl genpkey -algorithm ed25519 -outform DER | base64 -w0`
//!   prints it (PKCS#8 v1 or v2);
//! - `TWINCELL_ORIGIN_KEYS` = `<cell>/<key id>=<base64 public key>,…`: the
//!   public keys (32 bytes) of the peers this cell accepts events from.
//!   Two keys of one cell are both accepted: that is how a key is rotated
//!   without downtime (see `docs/replication.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use twincell_core::{CellId, EventMetadata, RecordedEvent};

use crate::config::SettingsError;

/// The extension attribute naming the signing key.
pub const KEY_ID_ATTRIBUTE: &str = "twincellkid";
/// The extension attribute holding the signature.
pub const SIGNATURE_ATTRIBUTE: &str = "twincellsig";
/// What the signed bytes start with: a signature of anything else (another
/// protocol, another version of this one) never verifies as this.
pub const CONTEXT: &[u8] = b"twincell.event-signature.v1\n";

const KEY_ID_MAX: usize = 64;

fn check_key_id(kid: &str) -> Result<(), String> {
    if (1..=KEY_ID_MAX).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "key id {kid:?} is not 1 to {KEY_ID_MAX} characters of letters, digits, '.', '_' and '-'"
        ))
    }
}

/// The bytes a signature covers.
fn message(kid: &str, event: &RecordedEvent) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(kid.as_bytes());
    bytes.push(b'\n');
    // The fact only: metadata (the trace context) is not signed, so a
    // signature stays what it was before events kept any, and a
    // transport's trace header never breaks one. Metadata decides nothing.
    if event.metadata().is_empty() {
        serde_json::to_writer(&mut bytes, event).map_err(|e| e.to_string())?;
    } else {
        let fact = event.clone().with_metadata(EventMetadata::default());
        serde_json::to_writer(&mut bytes, &fact).map_err(|e| e.to_string())?;
    }
    Ok(bytes)
}

/// This cell's signing key.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    pair: Arc<Ed25519KeyPair>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.pair.public_key().as_ref() == other.pair.public_key().as_ref()
    }
}

impl Eq for Signer {}

impl Signer {
    /// The key `TWINCELL_SIGNING_KEY` holds: `<key id>:<base64 PKCS#8>`.
    ///
    /// # Errors
    /// [`SettingsError`] saying what is wrong, never quoting the key.
    pub fn from_setting(value: &str) -> Result<Self, SettingsError> {
        let bad = |why: &str| SettingsError(format!("TWINCELL_SIGNING_KEY: {why}"));
        let (kid, key) = value
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("not <key id>:<base64 PKCS#8 Ed25519 key>"))?;
        check_key_id(kid).map_err(|e| bad(&e))?;
        let der = STANDARD
            .decode(key.trim())
            .map_err(|_| bad("the key is not base64"))?;
        Self::from_pkcs8(kid, &der).map_err(|e| bad(&e))
    }

    /// A signer with key id `kid` from a PKCS#8 (v1 or v2) Ed25519 key.
    ///
    /// # Errors
    /// What is wrong with the key id or the key.
    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Result<Self, String> {
        check_key_id(kid)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| "the key is not a PKCS#8 Ed25519 private key".to_owned())?;
        Ok(Self {
            kid: kid.to_owned(),
            pair: Arc::new(pair),
        })
    }

    /// A new key with id `kid`, and its PKCS#8 document (what
    /// `TWINCELL_SIGNING_KEY` holds after the id): for local runs and
    /// tests.
    ///
    /// # Errors
    /// What is wrong with the key id, or the system's randomness failing.
    pub fn generate(kid: &str) -> Result<(Self, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "no randomness for a new key".to_owned())?;
        let der = document.as_ref().to_vec();
        Ok((Self::from_pkcs8(kid, &der)?, der))
    }

    /// A new key with id `kid`, and the `TWINCELL_SIGNING_KEY` value that
    /// holds it: for local runs and tests.
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    pub fn generate_setting(kid: &str) -> Result<(Self, String), String> {
        let (signer, der) = Self::generate(kid)?;
        let setting = format!("{kid}:{}", STANDARD.encode(der));
        Ok((signer, setting))
    }

    /// The `TWINCELL_ORIGIN_KEYS` entry of this key as `cell`'s.
    #[must_use]
    pub fn origin_entry(&self, cell: &str) -> String {
        format!("{cell}/{}={}", self.kid, self.public_key_base64())
    }

    /// The key id.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The public key, base64: what peers list in `TWINCELL_ORIGIN_KEYS`.
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// The signature of `event` (base64url, no padding).
    ///
    /// # Errors
    /// When the event does not serialize (never for the core's events).
    pub fn sign(&self, event: &RecordedEvent) -> Result<String, String> {
        let bytes = message(&self.kid, event)?;
        Ok(URL_SAFE_NO_PAD.encode(self.pair.sign(&bytes).as_ref()))
    }
}

/// Why an event is not applied: it is not shown to come from its origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// The origin is not a peer of this cell (or no key is configured for
    /// it).
    #[error("origin {0} is not a peer this cell has a key for")]
    UnknownOrigin(CellId),
    /// No signature, or no key id.
    #[error("the event is not signed")]
    Unsigned,
    /// A key id this cell has no key of for the origin.
    #[error("no key {kid} of {origin} is configured")]
    UnknownKey {
        /// The origin.
        origin: CellId,
        /// The key id the event names (checked: a valid key id).
        kid: String,
    },
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The public keys of the peers this cell accepts events from, by cell
/// and key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginKeys {
    keys: BTreeMap<CellId, BTreeMap<String, [u8; 32]>>,
}

impl OriginKeys {
    /// The keys `TWINCELL_ORIGIN_KEYS` lists:
    /// `<cell>/<key id>=<base64 public key>`, separated by commas.
    ///
    /// # Errors
    /// [`SettingsError`] naming the entry that is wrong.
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        let mut keys = Self::default();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad =
                |why: &str| SettingsError(format!("TWINCELL_ORIGIN_KEYS entry {entry:?}: {why}"));
            let (name, key) = entry
                .split_once('=')
                .ok_or_else(|| bad("not <cell>/<key id>=<base64 public key>"))?;
            let (cell, kid) = name
                .split_once('/')
                .ok_or_else(|| bad("not <cell>/<key id>=<base64 public key>"))?;
            let cell = CellId::new(cell).map_err(|e| bad(&e.to_string()))?;
            check_key_id(kid).map_err(|e| bad(&e))?;
            let bytes: [u8; 32] = STANDARD
                .decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("the key is not 32 bytes of base64"))?;
            if keys
                .keys
                .entry(cell)
                .or_default()
                .insert(kid.to_owned(), bytes)
                .is_some()
            {
                return Err(bad("the key id is listed twice for the cell"));
            }
        }
        Ok(keys)
    }

    /// Adds `signer`'s public key as `cell`'s (local runs and tests).
    #[must_use]
    pub fn with(mut self, cell: &CellId, signer: &Signer) -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(signer.pair.public_key().as_ref());
        self.keys
            .entry(cell.clone())
            .or_default()
            .insert(signer.kid.clone(), key);
        self
    }

    /// Whether no key is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The cells with keys.
    pub fn cells(&self) -> impl Iterator<Item = &CellId> {
        self.keys.keys()
    }

    /// Checks that `event` is signed by a key of its origin: `kid` and
    /// `signature` as the event carried them.
    ///
    /// # Errors
    /// [`Untrusted`] saying why not.
    pub fn verify(
        &self,
        event: &RecordedEvent,
        kid: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), Untrusted> {
        let origin = event.origin();
        let keys = self
            .keys
            .get(origin)
            .ok_or_else(|| Untrusted::UnknownOrigin(origin.clone()))?;
        let (Some(kid), Some(signature)) = (kid, signature) else {
            return Err(Untrusted::Unsigned);
        };
        let key = keys.get(kid).ok_or_else(|| Untrusted::UnknownKey {
            origin: origin.clone(),
            // A key id that is not one is not echoed.
            kid: if check_key_id(kid).is_ok() {
                kid.to_owned()
            } else {
                "(not a key id)".to_owned()
            },
        })?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Untrusted::BadSignature)?;
        let bytes = message(kid, event).map_err(|_| Untrusted::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&bytes, &signature)
            .map_err(|_| Untrusted::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use twincell_core::event::{AggregateId, DomainEvent, StreamId};
    use twincell_core::{Quantity, Sku, Timestamp};

    fn event(origin: &str, quantity: u64) -> RecordedEvent {
        RecordedEvent::new(
            StreamId::new(
                AggregateId::inventory(&Sku::new("sku-1").unwrap()),
                CellId::new(origin).unwrap(),
            ),
            3,
            Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(quantity).unwrap(),
            },
        )
        .unwrap()
    }

    fn aws() -> CellId {
        CellId::new("aws").unwrap()
    }

    #[test]
    fn an_event_signed_by_its_origin_verifies_and_nothing_else_does() {
        let (signer, _) = Signer::generate("aws-1").unwrap();
        let keys = OriginKeys::default().with(&aws(), &signer);
        let e = event("aws", 5);
        let sig = signer.sign(&e).unwrap();
        assert_eq!(keys.verify(&e, Some("aws-1"), Some(&sig)), Ok(()));
        // Another event under the same signature.
        assert_eq!(
            keys.verify(&event("aws", 6), Some("aws-1"), Some(&sig)),
            Err(Untrusted::BadSignature)
        );
        // The same event claimed by another origin, or by another key.
        assert_eq!(
            keys.verify(&event("azure", 5), Some("aws-1"), Some(&sig)),
            Err(Untrusted::UnknownOrigin(CellId::new("azure").unwrap()))
        );
        assert!(matches!(
            keys.verify(&e, Some("aws-2"), Some(&sig)),
            Err(Untrusted::UnknownKey { .. })
        ));
        assert_eq!(keys.verify(&e, None, None), Err(Untrusted::Unsigned));
        assert_eq!(
            keys.verify(&e, Some("aws-1"), None),
            Err(Untrusted::Unsigned)
        );
        assert_eq!(
            keys.verify(&e, Some("aws-1"), Some("not base64!")),
            Err(Untrusted::BadSignature)
        );
        // A key of another cell signing as aws.
        let (mallory, _) = Signer::generate("aws-1").unwrap();
        assert_eq!(
            keys.verify(&e, Some("aws-1"), Some(&mallory.sign(&e).unwrap())),
            Err(Untrusted::BadSignature)
        );
    }

    #[test]
    fn the_signature_covers_the_fact_and_not_its_trace_context() {
        let (signer, _) = Signer::generate("aws-1").unwrap();
        let keys = OriginKeys::default().with(&aws(), &signer);
        let plain = event("aws", 5);
        let trace = |span: u8| {
            EventMetadata::traced(
                twincell_core::TraceParent::new([9; 16], [span; 8], true).unwrap(),
            )
        };
        let traced = plain.clone().with_metadata(trace(1));
        let sig = signer.sign(&traced).unwrap();
        assert_eq!(sig, signer.sign(&plain).unwrap());
        for received in [&plain, &traced, &plain.clone().with_metadata(trace(2))] {
            assert_eq!(keys.verify(received, Some("aws-1"), Some(&sig)), Ok(()));
        }
    }

    #[test]
    fn two_keys_of_one_cell_are_both_accepted_while_a_key_rotates() {
        let (old, _) = Signer::generate("aws-2026-11").unwrap();
        let (new, _) = Signer::generate("aws-2026-12").unwrap();
        let both = OriginKeys::default().with(&aws(), &old).with(&aws(), &new);
        let e = event("aws", 5);
        for signer in [&old, &new] {
            let sig = signer.sign(&e).unwrap();
            assert_eq!(both.verify(&e, Some(signer.key_id()), Some(&sig)), Ok(()));
        }
        // Once the old key is dropped, what it signs is refused.
        let after = OriginKeys::default().with(&aws(), &new);
        let sig = old.sign(&e).unwrap();
        assert!(after.verify(&e, Some(old.key_id()), Some(&sig)).is_err());
    }

    #[test]
    fn keys_read_from_their_settings_and_wrong_ones_are_named_without_the_key() {
        let (signer, der) = Signer::generate("k1").unwrap();
        let setting = format!("k1:{}", STANDARD.encode(&der));
        let read = Signer::from_setting(&setting).unwrap();
        assert_eq!(read, signer);
        let listed = format!(
            "aws/k1={},azure/k9={}",
            read.public_key_base64(),
            read.public_key_base64()
        );
        let keys = OriginKeys::parse(&listed).unwrap();
        assert_eq!(keys.cells().count(), 2);
        let e = event("aws", 1);
        assert_eq!(
            keys.verify(&e, Some("k1"), Some(&signer.sign(&e).unwrap())),
            Ok(())
        );
        for bad in ["k1", "k 1:abc", "k1:not base64!", "k1:aGVsbG8="] {
            let e = Signer::from_setting(bad).unwrap_err().to_string();
            assert!(e.starts_with("TWINCELL_SIGNING_KEY"), "{e}");
            assert!(!e.contains("aGVsbG8"), "{e}");
        }
        for bad in ["aws=abc", "aws/k1=abc", "AWS/k1=AAAA", "aws/k1=x,aws/k1=x"] {
            assert!(OriginKeys::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{signer:?}"), "Signer { kid: \"k1\" }");
    }
}
