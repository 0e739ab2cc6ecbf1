//! The provider plugin binary that Terraform starts.

use castle::provider::CastleProvider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    castle::logging::init();
    tf_provider::serve("castle", CastleProvider::default()).await
}
