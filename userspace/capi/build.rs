//! Declares the soname of libcma.so and generates Rust declarations from
//! `include/libcma.h`, which `src/lib.rs` checks its definitions against at
//! compile time, so that the header and the library cannot drift apart.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcma.so.0");
    let include = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../include")
        .canonicalize()
        .expect("include/ not found");
    let header = include.join("libcma.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("uapi/cma.h").display()
    );
    if env::var_os("LIBCLANG_PATH").is_none() {
        env::set_var("LIBCLANG_PATH", "/usr/lib/llvm-19/lib");
    }
    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("cma_.*")
        .allowlist_type("cma_report")
        // struct iovec is libc's.
        .blocklist_type("iovec")
        .raw_line("use libc::iovec;")
        .generate()
        .expect("bindgen failed on include/libcma.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("libcma_h.rs");
    bindings.write_to_file(&out).expect("writing bindings");
}
