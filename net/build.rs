//! Compiles etcd's protobuf schema (our own copies under `proto/`) with
//! `protox` (pure Rust parser, so no system `protoc`) and `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kv.proto",
        "proto/auth.proto",
        "proto/rpc.proto",
        "proto/v3lock.proto",
        "proto/v3election.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    config.compile_fds(fds)?;
    Ok(())
}
