//! Generates the gRPC/protobuf code of the node APIs from `dpdk.proto` and
//! `dpfleet_node.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from the distribution (protobuf-compiler); honour PROTOC when set.
    if std::env::var_os("PROTOC").is_none() {
        // Build scripts run single-threaded, so changing the environment is harmless.
        std::env::set_var("PROTOC", "/usr/bin/protoc");
    }
    println!("cargo:rerun-if-changed=dpdk.proto");
    println!("cargo:rerun-if-changed=dpfleet_node.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["dpdk.proto", "dpfleet_node.proto"], &["."])?;
    Ok(())
}
