//! Replication settings in the AWS cell. Keys are never plain template
//! parameters: `TWINCELL_REPLICATION_KEY_SECRET_ID`,
//! `TWINCELL_REPLICATION_TARGET_KEY_SECRET_ID` and
//! `TWINCELL_SIGNING_KEY_SECRET_ID` name Secrets Manager secrets (by ARN or
//! name; plain string values), read once during init. The plain variables
//! (`TWINCELL_REPLICATION_KEY`, `…_TARGET_KEY`, `TWINCELL_SIGNING_KEY`) are
//! for local runs; setting both forms of one key is refused. The peers'
//! public keys (`TWINCELL_ORIGIN_KEYS`) are not secret: a plain variable.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use twincell_replication::Settings;

/// What a variable naming a key's secret (ARN or name) is called: the
/// key's variable and this suffix.
pub const SECRET_SUFFIX: &str = "_SECRET_ID";
const KEYS: [&str; 3] = [
    "TWINCELL_REPLICATION_KEY",
    "TWINCELL_REPLICATION_TARGET_KEY",
    "TWINCELL_SIGNING_KEY",
];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A Secrets Manager client: the cell's one HTTP client (rustls on
/// *ring*), 1 s to connect, 5 s per call; region and credentials from the
/// standard sources, `AWS_ENDPOINT_URL` for a local server.
async fn client() -> aws_sdk_secretsmanager::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build();
    aws_sdk_secretsmanager::Client::new(&twincell_dynamodb::sdk_config(timeouts).await)
}

/// The keys named by a `…_SECRET_ID` variable, read from Secrets Manager,
/// by the name of the variable they stand for.
///
/// # Errors
/// A key set both ways, or a secret that can't be read or has no string
/// value.
pub async fn resolve_keys() -> anyhow::Result<HashMap<&'static str, String>> {
    let mut resolved: HashMap<&'static str, String> = HashMap::new();
    let mut secrets = None;
    for name in KEYS {
        let arn_var = format!("{name}{SECRET_SUFFIX}");
        let Some(arn) = env(&arn_var) else {
            continue;
        };
        if env(name).is_some() {
            bail!("{name} and {arn_var} are both set; set one of them");
        }
        let secrets = match &secrets {
            Some(client) => client,
            None => secrets.insert(client().await),
        };
        let value = secrets
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
            .map_err(|e| anyhow!("{}", DisplayErrorContext(&e)))
            .with_context(|| format!("reading {arn_var} ({arn}) from Secrets Manager"))?;
        let text = value
            .secret_string()
            .ok_or_else(|| anyhow!("the secret {arn} ({arn_var}) has no string value"))?;
        resolved.insert(name, text.to_owned());
    }
    Ok(resolved)
}

/// The process environment, with the keys of [`resolve_keys`] in it.
///
/// # Errors
/// As [`resolve_keys`].
pub async fn environment() -> anyhow::Result<impl Fn(&str) -> Option<String>> {
    let resolved = resolve_keys().await?;
    Ok(move |name: &str| {
        resolved
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    })
}

/// The replication settings, with keys read from Secrets Manager where a
/// secret is named.
///
/// # Errors
/// As [`resolve_keys`], or a setting [`Settings`] refuses.
pub async fn replication_settings() -> anyhow::Result<Settings> {
    Ok(Settings::from_lookup(environment().await?)?)
}
