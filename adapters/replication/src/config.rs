//! Replication settings, read once at start-up by each binary.
//!
//! | variable | meaning |
//! |---|---|
//! | `TWINCELL_REPLICATION_KEY` | the key deliverers must send in `x-twincell-replication-key`; unset, the `/replication/*` routes answer 404 (replication off) |
//! | `TWINCELL_REPLICATION_TARGET` | where this cell publishes its own events: an Event Grid topic endpoint, or the peer's `/replication/events` URL |
//! | `TWINCELL_REPLICATION_TARGET_KIND` | `eventgrid` or `webhook` |
//! | `TWINCELL_REPLICATION_TARGET_KEY` | the topic's key (`aeg-sas-key`), or the peer's replication key |
//! | `TWINCELL_SIGNING_KEY` | `<key id>:<base64 PKCS#8 Ed25519>`: the key this cell signs its own events with ([`crate::signing`]); required with a target (`none`: publish unsigned, for tests) |
//! | `TWINCELL_ORIGIN_KEYS` | `<cell>/<key id>=<base64 public key>,…`: the keys events of each peer must be signed with; required with `TWINCELL_REPLICATION_KEY` (`none`: apply unsigned events, for tests) |
//!
//! URLs are `https://`; `http://` only for a loopback host (local runs).

use url::Url;

use crate::key::{Secret, SecretError};
use crate::signing::{OriginKeys, Signer};

/// Event Grid's publish API version.
pub const EVENT_GRID_API_VERSION: &str = "2018-01-01";

/// What the publish target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An Event Grid topic (CloudEvents input schema); its subscriptions
    /// deliver to the peers.
    EventGrid,
    /// The peer's `/replication/events`, directly.
    Webhook,
}

/// Where and how a cell publishes its own events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    kind: TargetKind,
    url: Url,
    key: Secret,
}

impl Target {
    /// A target of `kind` at `url` with `key`.
    ///
    /// # Errors
    /// [`SettingsError`] for a URL that is not `https://` (or `http://` on
    /// a loopback host), carries credentials, a query or a fragment.
    pub fn new(kind: TargetKind, url: &str, key: Secret) -> Result<Self, SettingsError> {
        let bad = |why: &str| SettingsError(format!("TWINCELL_REPLICATION_TARGET {url:?}: {why}"));
        let mut parsed = Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => return Err(bad("no host")),
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(bad("http:// is only allowed for a loopback host")),
            other => return Err(bad(&format!("scheme {other} is not https"))),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("credentials belong in the key, not the URL"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("no query or fragment (the key travels in a header)"));
        }
        if kind == TargetKind::EventGrid {
            // The portal shows the topic endpoint with or without
            // `/api/events`; both mean the same topic.
            let path = parsed.path().trim_end_matches('/');
            let path = path.strip_suffix("/api/events").unwrap_or(path).to_owned();
            parsed.set_path(&format!("{path}/api/events"));
            parsed.set_query(Some(&format!("api-version={EVENT_GRID_API_VERSION}")));
        }
        Ok(Self {
            kind,
            url: parsed,
            key,
        })
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The URL publishes are POSTed to.
    #[must_use]
    pub fn publish_url(&self) -> &str {
        self.url.as_str()
    }

    /// The key, and the header it is sent in.
    #[must_use]
    pub fn key_header(&self) -> (&'static str, &Secret) {
        match self.kind {
            TargetKind::EventGrid => ("aeg-sas-key", &self.key),
            TargetKind::Webhook => (crate::KEY_HEADER, &self.key),
        }
    }
}

/// A missing or wrong setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// A cell's replication settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The key deliverers must present; `None`: receiving is off.
    pub key: Option<Secret>,
    /// Where this cell publishes; `None`: this process does not publish.
    pub target: Option<Target>,
    /// The key this cell signs the events it publishes with.
    pub signer: Option<Signer>,
    /// The keys of the peers whose events this cell applies; empty: events
    /// are not checked for signatures.
    pub origin_keys: OriginKeys,
}

impl Settings {
    /// From the process environment (see the [module docs](self)).
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable that is wrong or missing.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup` (the environment, or values resolved from a secret
    /// store by the caller).
    ///
    /// # Errors
    /// [`SettingsError`] naming the variable that is wrong or missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let secret = |name: &str, value: String| {
            Secret::new(&value).map_err(|e: SecretError| SettingsError(format!("{name}: {e}")))
        };
        let key = var("TWINCELL_REPLICATION_KEY")
            .map(|v| secret("TWINCELL_REPLICATION_KEY", v))
            .transpose()?;
        let target = match var("TWINCELL_REPLICATION_TARGET") {
            None => {
                for other in [
                    "TWINCELL_REPLICATION_TARGET_KIND",
                    "TWINCELL_REPLICATION_TARGET_KEY",
                ] {
                    if var(other).is_some() {
                        return Err(SettingsError(format!(
                            "{other} is set but TWINCELL_REPLICATION_TARGET is not"
                        )));
                    }
                }
                None
            }
            Some(url) => {
                let kind = match var("TWINCELL_REPLICATION_TARGET_KIND")
                    .as_deref()
                    .map(str::trim)
                {
                    Some("eventgrid") => TargetKind::EventGrid,
                    Some("webhook") => TargetKind::Webhook,
                    Some(other) => {
                        return Err(SettingsError(format!(
                            "TWINCELL_REPLICATION_TARGET_KIND is {other:?}; expected eventgrid or webhook"
                        )));
                    }
                    None => {
                        return Err(SettingsError(
                            "TWINCELL_REPLICATION_TARGET is set but TWINCELL_REPLICATION_TARGET_KIND \
                             (eventgrid or webhook) is not"
                                .into(),
                        ));
                    }
                };
                let target_key = var("TWINCELL_REPLICATION_TARGET_KEY").ok_or_else(|| {
                    SettingsError(
                        "TWINCELL_REPLICATION_TARGET is set but TWINCELL_REPLICATION_TARGET_KEY is not"
                            .into(),
                    )
                })?;
                let target_key = secret("TWINCELL_REPLICATION_TARGET_KEY", target_key)?;
                Some(Target::new(kind, &url, target_key)?)
            }
        };
        // Secure by default: a cell that publishes signs, a cell that
        // receives checks signatures; `none` says otherwise out loud.
        let signer = match var("TWINCELL_SIGNING_KEY").as_deref().map(str::trim) {
            Some("none") => None,
            Some(v) => Some(Signer::from_setting(v)?),
            None if target.is_some() => {
                return Err(SettingsError(
                    "TWINCELL_REPLICATION_TARGET is set but TWINCELL_SIGNING_KEY is not: peers apply                      only events signed by their origin (set <key id>:<base64 PKCS#8 Ed25519 key>,                      or none to publish unsigned events, for tests)"
                        .into(),
                ));
            }
            None => None,
        };
        let origin_keys = match var("TWINCELL_ORIGIN_KEYS").as_deref().map(str::trim) {
            // The router warns when it serves deliveries so.
            Some("none") => OriginKeys::default(),
            Some(v) => {
                let keys = OriginKeys::parse(v)?;
                if keys.is_empty() {
                    return Err(SettingsError(
                        "TWINCELL_ORIGIN_KEYS lists no key (set none to apply unsigned events, for tests)"
                            .into(),
                    ));
                }
                keys
            }
            None if key.is_some() => {
                return Err(SettingsError(
                    "TWINCELL_REPLICATION_KEY is set but TWINCELL_ORIGIN_KEYS is not: a receiving cell                      applies only events signed by their origin (set <cell>/<key id>=<base64 public key>,…                      or none to apply unsigned events, for tests)"
                        .into(),
                ));
            }
            None => OriginKeys::default(),
        };
        Ok(Self {
            key,
            target,
            signer,
            origin_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn nothing_set_is_replication_off() {
        assert_eq!(Settings::from_lookup(lookup(&[])), Ok(Settings::default()));
    }

    #[test]
    fn an_event_grid_endpoint_gets_the_publish_path_and_api_version() {
        for endpoint in [
            "https://t.westeurope-1.eventgrid.azure.net",
            "https://t.westeurope-1.eventgrid.azure.net/",
            "https://t.westeurope-1.eventgrid.azure.net/api/events",
        ] {
            let s = Settings::from_lookup(lookup(&[
                ("TWINCELL_REPLICATION_TARGET", endpoint),
                ("TWINCELL_REPLICATION_TARGET_KIND", "eventgrid"),
                ("TWINCELL_REPLICATION_TARGET_KEY", KEY),
                ("TWINCELL_SIGNING_KEY", "none"),
            ]))
            .unwrap();
            let target = s.target.unwrap();
            assert_eq!(
                target.publish_url(),
                "https://t.westeurope-1.eventgrid.azure.net/api/events?api-version=2018-01-01"
            );
            assert_eq!(target.key_header().0, "aeg-sas-key");
        }
    }

    #[test]
    fn a_webhook_is_used_as_given_with_the_replication_key_header() {
        let s = Settings::from_lookup(lookup(&[
            ("TWINCELL_REPLICATION_KEY", KEY),
            (
                "TWINCELL_REPLICATION_TARGET",
                "http://127.0.0.1:8081/replication/events",
            ),
            ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
            ("TWINCELL_REPLICATION_TARGET_KEY", KEY),
            ("TWINCELL_SIGNING_KEY", "none"),
            ("TWINCELL_ORIGIN_KEYS", "none"),
        ]))
        .unwrap();
        assert!(s.key.is_some());
        let target = s.target.unwrap();
        assert_eq!(
            target.publish_url(),
            "http://127.0.0.1:8081/replication/events"
        );
        assert_eq!(target.key_header().0, "x-twincell-replication-key");
    }

    #[test]
    fn a_cell_signs_what_it_publishes_and_checks_what_it_receives_unless_told_none() {
        let (signer, der) = Signer::generate("k1").unwrap();
        let private = format!(
            "k1:{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        let public = format!("azure/k1={}", signer.public_key_base64());
        let target = [
            ("TWINCELL_REPLICATION_TARGET", "https://x.example"),
            ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
            ("TWINCELL_REPLICATION_TARGET_KEY", KEY),
        ];
        let unsigned = Settings::from_lookup(lookup(&target)).unwrap_err().0;
        assert!(
            unsigned.contains("TWINCELL_SIGNING_KEY is not"),
            "{unsigned}"
        );
        let mut signed = target.to_vec();
        signed.push(("TWINCELL_SIGNING_KEY", &private));
        assert_eq!(
            Settings::from_lookup(lookup(&signed)).unwrap().signer,
            Some(signer)
        );

        let receiving = [("TWINCELL_REPLICATION_KEY", KEY)];
        let unchecked = Settings::from_lookup(lookup(&receiving)).unwrap_err().0;
        assert!(
            unchecked.contains("TWINCELL_ORIGIN_KEYS is not"),
            "{unchecked}"
        );
        let checked = Settings::from_lookup(lookup(&[
            ("TWINCELL_REPLICATION_KEY", KEY),
            ("TWINCELL_ORIGIN_KEYS", &public),
        ]))
        .unwrap();
        assert_eq!(checked.origin_keys.cells().count(), 1);
        let off = Settings::from_lookup(lookup(&[
            ("TWINCELL_REPLICATION_KEY", KEY),
            ("TWINCELL_ORIGIN_KEYS", "none"),
        ]))
        .unwrap();
        assert!(off.origin_keys.is_empty());
        assert!(
            Settings::from_lookup(lookup(&[
                ("TWINCELL_REPLICATION_KEY", KEY),
                ("TWINCELL_ORIGIN_KEYS", " , "),
            ]))
            .is_err()
        );
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (
                &[("TWINCELL_REPLICATION_KEY", "short")],
                "TWINCELL_REPLICATION_KEY",
            ),
            (
                &[("TWINCELL_REPLICATION_TARGET_KEY", KEY)],
                "TWINCELL_REPLICATION_TARGET is not",
            ),
            (
                &[("TWINCELL_REPLICATION_TARGET", "https://x.example")],
                "TARGET_KIND",
            ),
            (
                &[
                    ("TWINCELL_REPLICATION_TARGET", "https://x.example"),
                    ("TWINCELL_REPLICATION_TARGET_KIND", "sqs"),
                ],
                "\"sqs\"",
            ),
            (
                &[
                    ("TWINCELL_REPLICATION_TARGET", "https://x.example"),
                    ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
                ],
                "TARGET_KEY is not",
            ),
            (
                &[
                    (
                        "TWINCELL_REPLICATION_TARGET",
                        "http://peer.example/replication/events",
                    ),
                    ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
                    ("TWINCELL_REPLICATION_TARGET_KEY", KEY),
                ],
                "loopback",
            ),
            (
                &[
                    (
                        "TWINCELL_REPLICATION_TARGET",
                        "https://peer.example/r?code=abc",
                    ),
                    ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
                    ("TWINCELL_REPLICATION_TARGET_KEY", KEY),
                ],
                "query",
            ),
        ];
        for (pairs, expected) in cases {
            let e = Settings::from_lookup(lookup(pairs)).unwrap_err();
            assert!(e.0.contains(expected), "{pairs:?}: {e}");
            assert!(!e.0.contains(KEY), "a key in an error: {e}");
        }
    }
}
