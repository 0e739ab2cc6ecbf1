//! The provider plugin binary that Terraform starts.

use castle::provider::CastleProvider;

fn main() -> anyhow::Result<()> {
    // tf-provider captures a backtrace into every diagnostic when RUST_BACKTRACE is set; users
    // should read our message, not a stack. Panics keep their backtraces.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    castle::logging::init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(tf_provider::serve("castle", CastleProvider::default()))
}
