//! Compiles castle's own copy of the Talos API protos (`../proto`) into Rust.
//!
//! Both client and server code are generated: the provider only uses the clients, but the lab's
//! node emulator implements the services with the very same types, so the two cannot drift.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "google/rpc/status.proto",
        "common/common.proto",
        "machine/machine.proto",
        "storage/storage.proto",
        "cosi/resource.proto",
    ]
    .map(|f| root.join(f));
    // Debian's protobuf-compiler ships the well-known types in /usr/include.
    let includes = [root.clone(), std::path::PathBuf::from("/usr/include")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&files, &includes)?;
    Ok(())
}
