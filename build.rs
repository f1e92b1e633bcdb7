//! Compiles `proto/` into the built-in descriptor set the JSON ⇄ gRPC bridge embeds
//! (`$OUT_DIR/tracebridge.binpb`, a serialized `google.protobuf.FileDescriptorSet` with every
//! import, well-known types included). protox is pure Rust: no `protoc` at build or run time.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "google/api/http.proto",
    "google/api/annotations.proto",
    "tracebridge/demo/v1/demo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/google");
    println!("cargo:rerun-if-changed=proto/tracebridge");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(false)
        .open_files(PROTOS)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("tracebridge.binpb");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}
