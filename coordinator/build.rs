//! Generates the gRPC code of the Raft transport (`proto/raft.proto`) and of the cluster
//! API (`proto/cluster.proto`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from the distribution (protobuf-compiler); honour PROTOC when set.
    if std::env::var_os("PROTOC").is_none() {
        // Build scripts run single-threaded, so changing the environment is harmless.
        std::env::set_var("PROTOC", "/usr/bin/protoc");
    }
    println!("cargo:rerun-if-changed=proto/raft.proto");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/raft.proto", "proto/cluster.proto"], &["proto"])?;
    Ok(())
}
