//! Authentication settings, read once at start.
//!
//! | variable | meaning |
//! |---|---|
//! | `TWINCELL_AUTH_ISSUER` | one or more issuer URLs, comma-separated (a token's `iss` must be exactly one of them) |
//! | `TWINCELL_AUTH_AUDIENCE` | one or more audiences, comma-separated (a token's `aud`, or a Cognito access token's `client_id`, must name one) |
//! | `TWINCELL_AUTH_JWKS_URL` | optional: the JWKS URL(s), comma-separated; otherwise each issuer's `/.well-known/openid-configuration` names it |
//! | `TWINCELL_AUTH_SCOPE_PREFIX` | optional: the resource-server prefix(es) of custom scopes, comma-separated (default `twincell`: `twincell/inventory.write` grants `inventory.write`; another prefix grants nothing) |
//! | `TWINCELL_AUTH` | `disabled` turns authentication off explicitly (local runs and tests only) |
//!
//! URLs must be `https://`; `http://` is accepted only for a loopback host
//! (local tests).

use super::source::KeyLocation;

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    /// `TWINCELL_AUTH=disabled`: every route is open.
    Disabled,
    /// Bearer tokens of these issuers for these audiences.
    Bearer {
        /// Accepted `iss` values.
        issuers: Vec<String>,
        /// Accepted audiences.
        audiences: Vec<String>,
        /// Where the keys are.
        locations: Vec<KeyLocation>,
        /// The resource-server prefixes custom scopes are taken under.
        scope_prefixes: Vec<String>,
    },
    /// Nothing configured: the caller decides (the binaries refuse to
    /// start).
    Unset,
}

/// `Ok` when `url` may be fetched: `https://`, or `http://` to a loopback
/// host.
///
/// # Errors
/// Why not.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{url:?} must be https:// (http:// only for a loopback host)"
                ))
            }
        }
        other => Err(format!(
            "{url:?} has the scheme {other}; it must be https://"
        )),
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    /// Reads the settings through `env` (a variable's value, `None` when
    /// unset or blank).
    ///
    /// # Errors
    /// A bad or incomplete setting, with the reason.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let issuers = env("TWINCELL_AUTH_ISSUER")
            .map(|v| list(&v))
            .unwrap_or_default();
        let audiences = env("TWINCELL_AUTH_AUDIENCE")
            .map(|v| list(&v))
            .unwrap_or_default();
        let jwks = env("TWINCELL_AUTH_JWKS_URL")
            .map(|v| list(&v))
            .unwrap_or_default();
        let scope_prefixes = env("TWINCELL_AUTH_SCOPE_PREFIX")
            .map(|v| list(&v))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| vec![super::DEFAULT_SCOPE_PREFIX.to_owned()]);
        if let Some(bad) = scope_prefixes.iter().find(|p| p.contains(' ')) {
            return Err(format!(
                "TWINCELL_AUTH_SCOPE_PREFIX: {bad:?} holds a space; a scope prefix is one word"
            ));
        }
        match env("TWINCELL_AUTH").as_deref().map(str::trim) {
            Some("disabled") => {
                if !issuers.is_empty() || !audiences.is_empty() || !jwks.is_empty() {
                    return Err(
                        "TWINCELL_AUTH=disabled and TWINCELL_AUTH_* settings contradict each other"
                            .to_owned(),
                    );
                }
                return Ok(Self::Disabled);
            }
            Some(other) => {
                return Err(format!(
                    "TWINCELL_AUTH={other:?}: the only value is \"disabled\" (configure TWINCELL_AUTH_ISSUER and TWINCELL_AUTH_AUDIENCE to authenticate)"
                ));
            }
            None => {}
        }
        if issuers.is_empty() && audiences.is_empty() && jwks.is_empty() {
            return Ok(Self::Unset);
        }
        if issuers.is_empty() {
            return Err(
                "TWINCELL_AUTH_ISSUER is required with the other TWINCELL_AUTH_* settings"
                    .to_owned(),
            );
        }
        if audiences.is_empty() {
            return Err("TWINCELL_AUTH_AUDIENCE is required with TWINCELL_AUTH_ISSUER".to_owned());
        }
        for url in issuers.iter().chain(&jwks) {
            check_url(url)?;
        }
        let locations = if jwks.is_empty() {
            issuers
                .iter()
                .map(|issuer| KeyLocation::Discover {
                    issuer: issuer.clone(),
                })
                .collect()
        } else {
            jwks.into_iter().map(KeyLocation::Jwks).collect()
        };
        Ok(Self::Bearer {
            issuers,
            audiences,
            locations,
            scope_prefixes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_is_unset_and_disabled_must_be_explicit() {
        assert_eq!(read(&[]), Ok(Settings::Unset));
        assert_eq!(
            read(&[("TWINCELL_AUTH", "disabled")]),
            Ok(Settings::Disabled)
        );
        assert!(read(&[("TWINCELL_AUTH", "off")]).is_err());
        assert!(
            read(&[
                ("TWINCELL_AUTH", "disabled"),
                ("TWINCELL_AUTH_ISSUER", "https://a")
            ])
            .is_err()
        );
    }

    #[test]
    fn issuers_and_audiences_are_lists_and_keys_are_discovered_unless_named() {
        let got = read(&[
            (
                "TWINCELL_AUTH_ISSUER",
                "https://login.example/t/v2.0, https://cognito.example/pool",
            ),
            ("TWINCELL_AUTH_AUDIENCE", "api://twincell,client-1"),
        ])
        .unwrap();
        let Settings::Bearer {
            issuers,
            audiences,
            locations,
            scope_prefixes,
        } = got
        else {
            panic!("{got:?}");
        };
        assert_eq!(scope_prefixes, ["twincell"], "the default resource server");
        assert_eq!(issuers.len(), 2);
        assert_eq!(audiences, ["api://twincell", "client-1"]);
        assert_eq!(
            locations[1],
            KeyLocation::Discover {
                issuer: "https://cognito.example/pool".to_owned()
            }
        );
        let named = read(&[
            ("TWINCELL_AUTH_ISSUER", "https://a.example"),
            ("TWINCELL_AUTH_AUDIENCE", "x"),
            ("TWINCELL_AUTH_JWKS_URL", "http://127.0.0.1:9/jwks"),
        ])
        .unwrap();
        assert!(
            matches!(named, Settings::Bearer { locations, .. } if locations == [KeyLocation::Jwks("http://127.0.0.1:9/jwks".to_owned())])
        );
    }

    #[test]
    fn incomplete_settings_and_plain_http_elsewhere_than_loopback_are_refused() {
        assert!(read(&[("TWINCELL_AUTH_AUDIENCE", "x")]).is_err());
        assert!(read(&[("TWINCELL_AUTH_ISSUER", "https://a.example")]).is_err());
        for bad in [
            "http://login.example",
            "ftp://a",
            "not a url",
            "http://10.0.0.1",
        ] {
            assert!(
                read(&[
                    ("TWINCELL_AUTH_ISSUER", bad),
                    ("TWINCELL_AUTH_AUDIENCE", "x")
                ])
                .is_err(),
                "{bad}"
            );
        }
        for good in [
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://[::1]:1",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
    }
}
