//! Code generated from proto/ by tonic-prost-build (see build.rs).

/// The public API, package `stockraft.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stockraft.v1");
}

/// The log and snapshot formats, package `stockraft.internal.v1`.
pub mod internal {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stockraft.internal.v1");
}

/// The transport-ceiling bench service (benches/compare.sh), package
/// `stockraft.bench.v1`.
pub mod bench {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stockraft.bench.v1");
}

/// Every proto's descriptors, served by gRPC reflection so grpcurl, grpcui
/// and Postman work without the .proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stockraft_descriptor");
