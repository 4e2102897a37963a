//! Compiles `proto/swrm/v1/*.proto` without a system `protoc` (protox parses
//! them in Rust), generates prost messages and tonic services, and writes the
//! descriptor set that gRPC reflection serves.
//!
//! JSON: every message derives serde with the original snake_case names. We do
//! not use pbjson here because it writes 64-bit integers as strings and omits
//! default values, and the contract wants numbers and every field present.
//! `google.protobuf.*` maps to `pbjson_types`, whose `Struct`/`Value` have the
//! proto3 JSON form (plain JSON objects and values).

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/swrm/v1/common.proto",
    "proto/swrm/v1/device.proto",
    "proto/swrm/v1/admin.proto",
];

/// Fields that accept a device timestamp as RFC 3339 or Unix milliseconds.
const DEVICE_TS_FIELDS: &[&str] = &[
    ".swrm.v1.PushTelemetryRequest.ts",
    ".swrm.v1.SensorReading.ts",
    ".swrm.v1.DeviceEvent.ts",
    ".swrm.v1.CaptureMeta.ts",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("swrm_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let mut builder = tonic_prost_build::configure()
        // Needed so prost does not map google.protobuf to prost_types itself.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .message_attribute(
            ".swrm.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .emit_rerun_if_changed(false);
    for field in DEVICE_TS_FIELDS {
        builder = builder.field_attribute(
            field,
            "#[serde(deserialize_with = \"crate::json::device_ts\")]",
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}
