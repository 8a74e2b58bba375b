//! Compiles the transport-ceiling service's proto (`stockraft.bench.v1`)
//! with a vendored protoc. It lives here, not in the main crate's build.rs,
//! so the server never links or advertises it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Safe: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let proto_dir = PathBuf::from("proto");
    tonic_prost_build::configure().compile_protos(
        &[proto_dir.join("stockraft/bench/v1/ceiling.proto")],
        &[proto_dir],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
