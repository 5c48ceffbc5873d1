//! The `api` binary: the AWS cell's API Lambda (see `twincell_aws::api`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    twincell_aws::api::main().await
}
