//! Generates the raw DPDK bindings (`sys` module) and compiles the C glue.
//!
//! 1. `pkg-config --cflags libdpdk` gives the full compiler flags; DPDK's headers need
//!    all of them (`-include rte_config.h`, `-march=...`), so the very same flags go to
//!    bindgen (as clang arguments) and to `cc`.
//! 2. bindgen reads `csrc/dpdk.h` with a focused allowlist. `wrap_static_fns` writes a C
//!    file with an exported wrapper for every allowlisted `static inline` function
//!    (rx/tx burst, mbuf alloc/free/prepend/...), which `cc` compiles together with the
//!    hand-written shims in `csrc/shim.c` (macros and thread-locals).
//! 3. Linking uses `pkg-config --libs libdpdk`; poll-mode drivers are loaded by EAL itself.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let header = manifest.join("csrc/dpdk.h");
    println!("cargo:rerun-if-changed=csrc/dpdk.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // Emits the link flags.
    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .expect("libdpdk not found by pkg-config; install libdpdk-dev (DPDK 22.11)");

    let cflags =
        Command::new("pkg-config").args(["--cflags", "libdpdk"]).output().expect("cannot run pkg-config");
    assert!(cflags.status.success(), "pkg-config --cflags libdpdk failed");
    let cflags: Vec<String> = String::from_utf8(cflags.stdout)
        .expect("pkg-config output is not UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let wrappers = out.join("static_fns");
    let bindings = bindgen::Builder::default()
        .header(header.to_str().expect("non-UTF-8 path"))
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", manifest.join("csrc").display()))
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_lcore.*")
        .allowlist_function("rte_get_.*lcore.*")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_get_tsc_.*")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("dpfleet_.*")
        .allowlist_type("rte_eth_stats|rte_eth_dev_info|rte_eth_conf|rte_ether_addr")
        .allowlist_var("RTE_MAX_ETHPORTS|RTE_ETH_NAME_MAX_LEN|RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_DEFAULT_DATAROOM|RTE_MAX_LCORE|SOCKET_ID_ANY")
        // Packed types in rte_flow.h that bindgen cannot lay out.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .generate()
        .expect("bindgen failed on the DPDK headers");
    bindings.write_to_file(out.join("bindings.rs")).expect("cannot write bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .file(manifest.join("csrc/shim.c"))
        .include(manifest.join("csrc"))
        .include(&manifest)
        .flag_if_supported("-Wno-deprecated-declarations");
    for path in &lib.include_paths {
        build.include(path);
    }
    // Keep the flags that are not include paths (-include rte_config.h, -march=...).
    let mut it = cflags.iter();
    while let Some(f) = it.next() {
        if f == "-include" {
            build.flag(f).flag(it.next().expect("-include without a file"));
        } else if !f.starts_with("-I") {
            build.flag(f);
        }
    }
    build.compile("dpfleet_dpdk_glue");
}
