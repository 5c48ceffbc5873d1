//! The `handler` binary: the Azure cell's custom handler (see the
//! `twincell_azure` crate).

// Each request allocates many small, short-lived objects; mimalloc serves
// them faster than the system allocator: +22 % requests per second in the
// load test (docs/measurements.md). The Lambda keeps the system allocator:
// there mimalloc cost a millisecond of init and 6 MB of RSS for no gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    twincell_azure::main(clap::Parser::parse()).await
}
