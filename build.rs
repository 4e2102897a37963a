//! Compiles `proto/` without a system `protoc` (protox parses it in Rust),
//! generates the prost messages and tonic services, and, from the same
//! descriptors (their `google.api.http` bindings, `swrm.api` options and
//! comments), generates what would otherwise restate the contract by hand:
//!
//! - `swrm_checks.rs`: field checks for every request message, `Debug` that
//!   redacts secret fields, and a wrapper per service that admits the caller
//!   and checks the request before the handler runs (gRPC and REST alike);
//! - `swrm_rest.rs`: the axum route table that calls those wrappers;
//! - `swrm_openapi.json`: the OpenAPI document served at `/api/openapi.json`;
//! - `swrm_descriptor.bin`: the descriptor set gRPC reflection serves.
//!
//! JSON: every message derives serde with the original snake_case names. We do
//! not use pbjson here because it writes 64-bit integers as strings and omits
//! default values, and the contract wants numbers and every field present.
//! `google.protobuf.*` maps to `pbjson_types`, whose `Struct`/`Value` have the
//! proto3 JSON form (plain JSON objects and values).

#[path = "proto/codegen/checks.rs"]
mod checks;
#[path = "proto/codegen/model.rs"]
mod model;
#[path = "proto/codegen/openapi.rs"]
mod openapi;
#[path = "proto/codegen/rest.rs"]
mod rest;

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "swrm/v1/common.proto",
    "swrm/v1/device.proto",
    "swrm/v1/ingest.proto",
    "swrm/v1/captures.proto",
    "swrm/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // This encoding keeps the custom options (prost_types would drop them),
    // so reflection clients see the HTTP bindings too.
    std::fs::write(
        out_dir.join("swrm_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let api = model::Api::read(&compiler.descriptor_pool())?;
    std::fs::write(out_dir.join("swrm_checks.rs"), checks::generate(&api))?;
    std::fs::write(out_dir.join("swrm_rest.rs"), rest::generate(&api))?;
    std::fs::write(
        out_dir.join("swrm_openapi.json"),
        openapi::generate(&api, env!("CARGO_PKG_VERSION")),
    )?;

    let mut builder = tonic_prost_build::configure()
        // Needed so prost does not map google.protobuf to prost_types itself.
        .compile_well_known_types(true)
        // A smaller first encode buffer per response body (see the module).
        .codec_path("crate::grpc::codec::LeanCodec")
        .extern_path(".google.protobuf", "::pbjson_types")
        .message_attribute(
            ".swrm.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        // Oneofs (the upload chunks) need serde for their message to have it.
        .enum_attribute(
            ".swrm.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        // Messages with secrets get the redacting Debug of swrm_checks.rs.
        .skip_debug(api.messages_with_secrets())
        .emit_rerun_if_changed(false);
    for (field, with) in api.free_json_fields() {
        builder = builder.field_attribute(
            field,
            format!("#[serde(deserialize_with = \"crate::json::{with}\")]"),
        );
    }
    for field in api.device_ts_fields() {
        builder = builder.field_attribute(
            field,
            "#[serde(deserialize_with = \"crate::json::device_ts\")]",
        );
    }
    builder.compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
