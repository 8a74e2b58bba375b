//! Compiles the protobuf contracts with a vendored protoc, so a fresh machine
//! needs no protoc of its own.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Safe: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("stockraft_descriptor.bin"))
        .compile_protos(
            &[
                "proto/stockraft/v1/inventory.proto",
                "proto/stockraft/v1/cluster.proto",
                "proto/stockraft/internal/v1/log.proto",
                "proto/stockraft/internal/v1/peer.proto",
                "proto/stockraft/bench/v1/ceiling.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
