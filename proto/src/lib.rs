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

/// The gRPC reflection services of a meldnet server (its services and
/// health), in both versions: `v1`, and `v1alpha`, which several stock
/// clients (grpcurl before 1.8, older grpcio tools, Postman) still ask.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
