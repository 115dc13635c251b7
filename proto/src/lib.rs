//! The wire protocol, `meldnet.v1`. Generated from `proto/meldnet/v1/*.proto`;
//! every other crate speaks to the others only through these types.

/// Generated messages and services of package `meldnet.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meldnet.v1");
}

pub mod codec;
pub mod limits;

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meldnet_descriptor.bin"));
