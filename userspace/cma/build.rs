//! Generates the ABI types and constants from the C UAPI header, the single
//! source of truth shared with the kernel module and C users. bindgen also
//! emits compile-time checks of every struct's size, alignment and offsets.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../include/uapi/cma.h")
        .canonicalize()
        .expect("include/uapi/cma.h not found");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    if env::var_os("LIBCLANG_PATH").is_none() {
        // Debian's clang 19, installed by scripts/deps.sh.
        env::set_var("LIBCLANG_PATH", "/usr/lib/llvm-19/lib");
    }

    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_item("cma_.*|CMA_.*")
        // Evaluates the _IOR()/_IOWR() ioctl numbers, which are function-like macros.
        .clang_macro_fallback()
        .derive_default(true)
        .derive_eq(true)
        .generate()
        .expect("bindgen failed on include/uapi/cma.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("cma_uapi.rs");
    bindings.write_to_file(&out).expect("writing bindings");
}
