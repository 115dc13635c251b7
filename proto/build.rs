//! Compiles `meldnet/v1/*.proto` with protox (pure Rust, no system protoc),
//! generates the tonic code and writes the descriptor set for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const FILES: &[&str] = &[
    "meldnet/v1/report.proto",
    "meldnet/v1/decision.proto",
    "meldnet/v1/hub.proto",
    "meldnet/v1/store.proto",
    "meldnet/v1/hashlist.proto",
    "meldnet/v1/series.proto",
    "meldnet/v1/notice.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("meldnet_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every service and client refuses oversized repeated fields before
        // decoding them (src/codec.rs).
        .codec_path("crate::codec::BoundedCodec")
        .compile_fds(fds)?;
    Ok(())
}
