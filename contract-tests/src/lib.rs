//! # twincell-contract
//!
//! The parity contract suite: cases as data ([`case`]), targets to run them
//! on ([`target`]: the Azure handler process, the Lambda process under a
//! Runtime API emulator, deployed URLs; the in-process router and Lambda
//! adapter live in this crate's tests), and a runner that checks every
//! answer against its case and every target against the others ([`runner`]).
//!
//! The `twincell-contract` binary runs the same cases against deployed
//! cells: `twincell-contract --target aws=https://… --target azure=https://…`.

pub mod case;
pub mod emulator;
pub mod lambda_events;
pub mod runner;
pub mod target;

/// Every case file shipped with the suite, embedded: (file name, contents).
pub const CASE_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/case_files.rs"));

/// The embedded cases.
///
/// # Errors
/// A case file that does not parse (a test keeps them parsing).
pub fn embedded_cases() -> Result<Vec<case::Case>, String> {
    let mut cases = Vec::new();
    for (name, text) in CASE_FILES {
        cases.extend(case::parse_cases(text).map_err(|e| format!("{name}: {e}"))?);
    }
    Ok(cases)
}
