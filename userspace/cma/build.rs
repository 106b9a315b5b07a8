//! Generates the ABI types and constants from the C UAPI header, the single
//! source of truth shared with the kernel module and C users. bindgen also
//! emits compile-time checks of every struct's size, alignment and offsets.

use bindgen::callbacks::{IntKind, ParseCallbacks};
use std::env;
use std::path::PathBuf;

/// Gives each constant the width of the field it goes in (bindgen would make
/// every one that fits a `u32`), so that no user has to cast it: the feature
/// bits and `struct cma_copy`'s flags are `__u64`, the copy1 limit bounds a
/// `__u64` length; the per-struct masks of the `__u32` flags fields and the
/// iovec limit stay `u32`.
#[derive(Debug)]
struct FieldWidths;

impl ParseCallbacks for FieldWidths {
    fn int_macro(&self, name: &str, _value: i64) -> Option<IntKind> {
        match name {
            "CMA_COPY_PIDFD" | "CMA_COPY_PVM" | "CMA_COPY_FLAGS_ALL" | "CMA_COPY1_MAX" => {
                Some(IntKind::U64)
            }
            _ if name.starts_with("CMA_FEAT_") => Some(IntKind::U64),
            _ => None,
        }
    }
}

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
        .parse_callbacks(Box::new(FieldWidths))
        .derive_default(true)
        .derive_eq(true)
        .generate()
        .expect("bindgen failed on include/uapi/cma.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("cma_uapi.rs");
    bindings.write_to_file(&out).expect("writing bindings");
}
