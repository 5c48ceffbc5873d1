//! One typed configuration for every cell binary, read once at start-up:
//! which cell this is and its peers, which store it runs on, who may call,
//! replication, what the process keeps, the clock — and one log set-up. A
//! binary's `main` reads it, builds the store it names, and serves; a bad
//! value stops the process at start with the variable's name.
//!
//! | variable | meaning |
//! |---|---|
//! | `TWINCELL_CELL`, `TWINCELL_PEERS` | this cell's id, the others (comma-separated); defaults per binary |
//! | `TWINCELL_STORE` | `memory`, `sqlite`, `dynamodb` or `cosmos`: required; each binary serves the ones it was built with |
//! | `TWINCELL_SQLITE_PATH` | the SQLite file (`sqlite` only; required there) |
//! | `TWINCELL_AUTH_*`, `TWINCELL_AUTH` | who may call ([`crate::auth`]) |
//! | `TWINCELL_REPLICATION_*` | replication (`twincell_replication::config`) |
//! | `TWINCELL_CACHE_SKUS`, `TWINCELL_SNAPSHOT_EVERY` | what the process keeps ([`crate::tuning`]) |
//! | `TWINCELL_FIXED_CLOCK_MS` | a frozen clock: contract-mode builds only |
//!
//! The cloud stores' own variables (the table, the Cosmos DB account) are
//! read by their adapters once this configuration says to use them; one
//! set for a store that is not chosen is refused, so a cell never runs on a
//! store other than the one it was told to use.
//!
//! **Local runs** ([`CellDefaults::local`], the `--local` flag of the
//! binaries): with `TWINCELL_STORE` unset the cell keeps its events in the
//! SQLite file `.twincell/<cell>.sqlite` under the working directory, and
//! with no authentication setting at all it serves without tokens. Nothing
//! a deployment runs passes the flag, so a packaged cell without
//! `TWINCELL_STORE` refuses to start.

use std::path::PathBuf;
use std::sync::Arc;

use twincell_core::Topology;

use crate::Tuning;
use crate::auth::{self, Authenticator, DeliveryTokens};

/// A kind of store a cell can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In memory: lost when the process ends. Only when asked for.
    Memory,
    /// One SQLite file (`twincell-sqlite`).
    Sqlite,
    /// DynamoDB (`twincell-dynamodb`): the AWS cell's.
    DynamoDb,
    /// Cosmos DB (`twincell-cosmos`): the Azure cell's.
    Cosmos,
}

impl StoreKind {
    /// Every kind, in the order they are listed.
    pub const ALL: [Self; 4] = [Self::Memory, Self::Sqlite, Self::DynamoDb, Self::Cosmos];

    /// Its `TWINCELL_STORE` value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::DynamoDb => "dynamodb",
            Self::Cosmos => "cosmos",
        }
    }

    /// The variables only this kind reads: set for another kind, they say
    /// the configuration is not what the operator thinks.
    fn own_variables(self) -> &'static [&'static str] {
        match self {
            Self::Memory => &[],
            Self::Sqlite => &["TWINCELL_SQLITE_PATH"],
            Self::DynamoDb => &["TWINCELL_DYNAMODB_TABLE"],
            Self::Cosmos => &["TWINCELL_COSMOS_ENDPOINT", "TWINCELL_COSMOS_EMULATOR"],
        }
    }
}

/// The store a cell runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In memory.
    Memory,
    /// The SQLite file at this path.
    Sqlite(PathBuf),
    /// DynamoDB, as `twincell_dynamodb::Settings` reads it.
    DynamoDb,
    /// Cosmos DB, as `twincell_cosmos::Settings` reads it.
    Cosmos,
}

impl StoreChoice {
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> StoreKind {
        match self {
            Self::Memory => StoreKind::Memory,
            Self::Sqlite(_) => StoreKind::Sqlite,
            Self::DynamoDb => StoreKind::DynamoDb,
            Self::Cosmos => StoreKind::Cosmos,
        }
    }
}

impl std::fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            other => f.write_str(other.kind().name()),
        }
    }
}

/// What a binary brings to its configuration.
#[derive(Debug, Clone, Copy)]
pub struct CellDefaults {
    /// `TWINCELL_CELL` when unset.
    pub cell: &'static str,
    /// `TWINCELL_PEERS` when unset.
    pub peers: &'static str,
    /// The stores this binary was built with.
    pub stores: &'static [StoreKind],
    /// A local run: defaults for a laptop (see the [module docs](self)).
    pub local: bool,
}

/// Why the configuration was refused: the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A cell's whole configuration.
#[derive(Clone)]
pub struct CellConfig {
    /// This cell and its peers.
    pub topology: Topology,
    /// The store it runs on.
    pub store: StoreChoice,
    /// Who may call; `None`: every route is open (`TWINCELL_AUTH=disabled`).
    pub auth: Option<Arc<Authenticator>>,
    /// Event Grid's Entra tokens on `/replication/events`.
    pub delivery_tokens: Option<DeliveryTokens>,
    /// Replication.
    pub replication: twincell_replication::Settings,
    /// What the process keeps between requests.
    pub tuning: Tuning,
    /// A frozen clock (ms since the epoch), for the parity suite's
    /// contract-mode builds; a binary without that mode refuses it.
    pub fixed_clock_ms: Option<i64>,
}

impl std::fmt::Debug for CellConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellConfig")
            .field("topology", &self.topology)
            .field("store", &self.store)
            .field("auth", &self.auth.is_some())
            .field("delivery_tokens", &self.delivery_tokens.is_some())
            .field("replication", &self.replication)
            .field("tuning", &self.tuning)
            .field("fixed_clock_ms", &self.fixed_clock_ms)
            .finish()
    }
}

const AUTH_VARIABLES: [&str; 4] = [
    "TWINCELL_AUTH",
    "TWINCELL_AUTH_ISSUER",
    "TWINCELL_AUTH_AUDIENCE",
    "TWINCELL_AUTH_JWKS_URL",
];

impl CellConfig {
    /// From the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is wrong or missing.
    pub fn from_env(defaults: &CellDefaults) -> Result<Self, ConfigError> {
        Self::from_lookup(defaults, |name| std::env::var(name).ok())
    }

    /// From `lookup` (the environment, or values resolved from a secret
    /// store by the caller); empty values count as unset.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is wrong or missing.
    pub fn from_lookup(
        defaults: &CellDefaults,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let cell = var("TWINCELL_CELL").unwrap_or_else(|| defaults.cell.to_owned());
        let peers = var("TWINCELL_PEERS").unwrap_or_else(|| defaults.peers.to_owned());
        let topology = Topology::parse(&cell, &peers)
            .map_err(|e| ConfigError(format!("TWINCELL_CELL / TWINCELL_PEERS: {e}")))?;
        let store = store(defaults, &var, topology.this().as_str())?;
        // A local run with no authentication setting at all serves
        // without tokens; any setting is taken as it is.
        let open_locally = defaults.local && AUTH_VARIABLES.iter().all(|v| var(v).is_none());
        let auth_var = |name: &str| {
            if open_locally && name == "TWINCELL_AUTH" {
                Some("disabled".to_owned())
            } else {
                var(name)
            }
        };
        let auth = auth::from_env(auth_var).map_err(ConfigError)?;
        let delivery_tokens =
            auth::delivery_tokens_from_env(var, auth.as_ref()).map_err(ConfigError)?;
        let replication =
            twincell_replication::Settings::from_lookup(var).map_err(|e| ConfigError(e.0))?;
        if delivery_tokens.is_some() && replication.key.is_none() {
            return Err(ConfigError(
                "TWINCELL_REPLICATION_AUTH_AUDIENCE needs TWINCELL_REPLICATION_KEY: replication is off without its key"
                    .to_owned(),
            ));
        }
        let tuning = Tuning::from_env(var).map_err(ConfigError)?;
        let fixed_clock_ms = var("TWINCELL_FIXED_CLOCK_MS")
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ConfigError(format!(
                        "TWINCELL_FIXED_CLOCK_MS={v:?} is not a whole number of milliseconds"
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            topology,
            store,
            auth,
            delivery_tokens,
            replication,
            tuning,
            fixed_clock_ms,
        })
    }
}

fn store(
    defaults: &CellDefaults,
    var: &impl Fn(&str) -> Option<String>,
    cell: &str,
) -> Result<StoreChoice, ConfigError> {
    let served = defaults
        .stores
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ");
    let kind = match var("TWINCELL_STORE") {
        Some(name) => StoreKind::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .filter(|k| defaults.stores.contains(k))
            .ok_or_else(|| {
                ConfigError(format!(
                    "TWINCELL_STORE={name:?}: this binary runs on {served}"
                ))
            })?,
        None if defaults.local => StoreKind::Sqlite,
        None => {
            return Err(ConfigError(format!(
                "TWINCELL_STORE is not set: say which store this cell keeps its events in ({served}); memory only when asked for"
            )));
        }
    };
    for other in StoreKind::ALL.into_iter().filter(|k| *k != kind) {
        if let Some(stray) = other.own_variables().iter().find(|v| var(v).is_some()) {
            return Err(ConfigError(format!(
                "{stray} is set but TWINCELL_STORE is {}: unset it, or choose {}",
                kind.name(),
                other.name()
            )));
        }
    }
    Ok(match kind {
        StoreKind::Memory => StoreChoice::Memory,
        StoreKind::DynamoDb => StoreChoice::DynamoDb,
        StoreKind::Cosmos => StoreChoice::Cosmos,
        StoreKind::Sqlite => match var("TWINCELL_SQLITE_PATH") {
            Some(path) => StoreChoice::Sqlite(PathBuf::from(path)),
            None if defaults.local => {
                StoreChoice::Sqlite(PathBuf::from(".twincell").join(format!("{cell}.sqlite")))
            }
            None => {
                return Err(ConfigError(
                    "TWINCELL_STORE=sqlite needs TWINCELL_SQLITE_PATH, the file to keep events in"
                        .to_owned(),
                ));
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const HANDLER: CellDefaults = CellDefaults {
        cell: "azure",
        peers: "aws",
        stores: &[StoreKind::Cosmos, StoreKind::Sqlite, StoreKind::Memory],
        local: false,
    };

    fn config(defaults: &CellDefaults, vars: &[(&str, &str)]) -> Result<CellConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CellConfig::from_lookup(defaults, |name| vars.get(name).cloned())
    }

    fn error(defaults: &CellDefaults, vars: &[(&str, &str)]) -> String {
        match config(defaults, vars) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn a_packaged_cell_without_a_store_refuses_naming_the_variable() {
        let e = error(&HANDLER, &[("TWINCELL_AUTH", "disabled")]);
        assert!(e.starts_with("TWINCELL_STORE is not set"), "{e}");
        assert!(e.contains("cosmos, sqlite, memory"), "{e}");
    }

    #[test]
    fn memory_only_when_asked_for() {
        let c = config(
            &HANDLER,
            &[("TWINCELL_STORE", "memory"), ("TWINCELL_AUTH", "disabled")],
        )
        .unwrap();
        assert_eq!(c.store, StoreChoice::Memory);
    }

    #[test]
    fn a_store_the_binary_was_not_built_with_is_refused() {
        let e = error(
            &HANDLER,
            &[
                ("TWINCELL_STORE", "dynamodb"),
                ("TWINCELL_AUTH", "disabled"),
            ],
        );
        assert!(
            e.contains("TWINCELL_STORE=\"dynamodb\": this binary runs on cosmos, sqlite, memory"),
            "{e}"
        );
        let e = error(
            &HANDLER,
            &[
                ("TWINCELL_STORE", "postgres"),
                ("TWINCELL_AUTH", "disabled"),
            ],
        );
        assert!(e.contains("TWINCELL_STORE=\"postgres\""), "{e}");
    }

    #[test]
    fn sqlite_needs_its_path_and_takes_it() {
        let e = error(
            &HANDLER,
            &[("TWINCELL_STORE", "sqlite"), ("TWINCELL_AUTH", "disabled")],
        );
        assert!(e.contains("TWINCELL_SQLITE_PATH"), "{e}");
        let c = config(
            &HANDLER,
            &[
                ("TWINCELL_STORE", "sqlite"),
                ("TWINCELL_SQLITE_PATH", "/data/azure.sqlite"),
                ("TWINCELL_AUTH", "disabled"),
            ],
        )
        .unwrap();
        assert_eq!(c.store, StoreChoice::Sqlite("/data/azure.sqlite".into()));
    }

    #[test]
    fn another_stores_settings_are_refused_rather_than_ignored() {
        let e = error(
            &HANDLER,
            &[
                ("TWINCELL_STORE", "memory"),
                (
                    "TWINCELL_COSMOS_ENDPOINT",
                    "https://acct.documents.azure.com",
                ),
                ("TWINCELL_AUTH", "disabled"),
            ],
        );
        assert!(
            e.starts_with("TWINCELL_COSMOS_ENDPOINT is set but TWINCELL_STORE is memory"),
            "{e}"
        );
    }

    #[test]
    fn a_local_run_keeps_its_events_in_a_file_and_serves_without_tokens_unless_told_otherwise() {
        let local = CellDefaults {
            local: true,
            ..HANDLER
        };
        let c = config(&local, &[]).unwrap();
        assert_eq!(
            c.store,
            StoreChoice::Sqlite(PathBuf::from(".twincell/azure.sqlite"))
        );
        assert!(c.auth.is_none());
        // Any authentication setting is taken as it is.
        let e = error(
            &local,
            &[("TWINCELL_AUTH_ISSUER", "https://login.example/")],
        );
        assert!(e.contains("TWINCELL_AUTH_AUDIENCE"), "{e}");
    }

    #[test]
    fn bad_values_stop_the_start_with_the_variable_named() {
        let base = [("TWINCELL_STORE", "memory"), ("TWINCELL_AUTH", "disabled")];
        for (name, value) in [
            ("TWINCELL_CELL", "Not A Cell"),
            ("TWINCELL_CACHE_SKUS", "lots"),
            ("TWINCELL_FIXED_CLOCK_MS", "noon"),
            ("TWINCELL_REPLICATION_KEY", "short"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let e = error(&HANDLER, &vars);
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}
