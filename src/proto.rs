//! Code generated from proto/ by tonic-prost-build (see build.rs).

/// The public API, package `stockraft.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::too_many_lines, missing_docs)]
    tonic::include_proto!("stockraft.v1");

    impl Outcome {
        /// The name without its enum prefix (`INSUFFICIENT_STOCK`): the
        /// label of metrics and reports, which keep the names they had
        /// before the values took the prefix buf's lint asks for.
        pub fn short_name(self) -> &'static str {
            let name = self.as_str_name();
            name.strip_prefix("OUTCOME_").unwrap_or(name)
        }
    }
}

/// The log, snapshot and peer formats, package `stockraft.internal.v1`.
/// Never advertised by reflection.
pub mod internal {
    #![allow(clippy::all, clippy::too_many_lines, missing_docs)]
    tonic::include_proto!("stockraft.internal.v1");
}

/// raft-rs's wire format (`eraftpb`), described again for prost, package
/// `stockraft.internal.raft.v1`: see `replica::wire`.
pub mod raft_wire {
    #![allow(clippy::all, clippy::too_many_lines, missing_docs)]
    tonic::include_proto!("stockraft.internal.raft.v1");
}

/// The public API's descriptors, served by gRPC reflection so grpcurl,
/// grpcui and Postman work without the .proto files. The internal
/// services are left out: they are for members only.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("stockraft_public_descriptor");
