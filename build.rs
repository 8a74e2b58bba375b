//! Compiles the protobuf contracts with a vendored protoc, so a fresh machine
//! needs no protoc of its own.
//!
//! Apart, so that what a server advertises and what it links stay apart:
//! the public API (`stockraft.v1`, whose descriptors reflection serves),
//! the internal formats (`stockraft.internal.v1`: log, snapshots, peers;
//! never advertised), raft-rs's wire format described again for prost
//! (`stockraft.internal.raft.v1`). The benchmark-only ceiling service has
//! its own build, in bench/.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Safe: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The public messages know their full names (`prost::Name`): the CLI
    // prints any of them in the proto3 JSON mapping through reflection.
    let mut public = tonic_prost_build::Config::new();
    public.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("stockraft_public_descriptor.bin"))
        .compile_with_config(
            public,
            &[
                "proto/stockraft/v1/inventory.proto",
                "proto/stockraft/v1/cluster.proto",
            ],
            &["proto"],
        )?;
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/stockraft/internal/v1/log.proto",
            "proto/stockraft/internal/v1/peer.proto",
        ],
        &["proto"],
    )?;
    // raft-rs's wire format, decoded with prost; `bytes` fields share the
    // buffer they were read from (entries' data are not copied).
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/stockraft/internal/raft/v1/wire.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
