//! Compiles `proto/cave.proto` with protox (a pure-Rust protobuf compiler): no `protoc` needed anywhere.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cave.proto");
    let descriptors = protox::compile(["proto/cave.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
