//! `--json`: any answer in the proto3 JSON mapping, as grpcurl prints it
//! (lowerCamelCase names, 64-bit integers as strings, enum values by
//! name), with every field shown, defaults included, so a script finds
//! the same keys in every answer. Made through reflection from the
//! descriptors the server advertises, never written by hand: a field added
//! to the contract shows up here with no change.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

/// The public API's descriptors, with the google.rpc error details and
/// the health service's, in one pool.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        let sets = [
            stockraft::proto::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ];
        for set in sets {
            // Built into the binary by build.rs and the crates: a failure
            // is a build defect, and the pool lacks the types it held.
            if let Err(e) = pool.decode_file_descriptor_set(set) {
                eprintln!("warning: descriptors for --json are incomplete: {e}");
            }
        }
        pool
    })
}

/// `message` in the proto3 JSON mapping. `name` is its full protobuf name.
pub(super) fn to_json<M: prost::Message>(message: &M, name: &str) -> Value {
    let Some(descriptor) = pool().get_message_by_name(name) else {
        return Value::String(format!("(no descriptor for {name})"));
    };
    let bytes = message.encode_to_vec();
    let dynamic = match DynamicMessage::decode(descriptor, bytes.as_slice()) {
        Ok(dynamic) => dynamic,
        Err(e) => return Value::String(format!("(undecodable {name}: {e})")),
    };
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or_else(|e| Value::String(format!("(unprintable {name}: {e})")))
}

/// A message of the public API in the proto3 JSON mapping.
pub(super) fn message<M: prost::Message + prost::Name>(message: &M) -> Value {
    to_json(message, &M::full_name())
}

/// A refused call as google.rpc.Status in the proto3 JSON mapping: its
/// code, message and details (ErrorInfo, BadRequest, RetryInfo), what a
/// script reads to decide.
pub(super) fn status(status: &tonic::Status) -> Value {
    let decoded = if status.details().is_empty() {
        None
    } else {
        <tonic_types::pb::Status as prost::Message>::decode(status.details()).ok()
    };
    let rpc_status = decoded.unwrap_or_else(|| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    });
    to_json(&rpc_status, "google.rpc.Status")
}
