# Shared settings for the scripts; sourced, not run.
# The cache lives outside the clone so that every clone (and CI) reuses it.
CMA_CACHE=${CMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cma}
CMA_TOOLS=$CMA_CACHE/tools
CMA_VENV=$CMA_CACHE/venv
BINDGEN_VERSION=0.73.2
VNG_VERSION=1.42
LIBCLANG_PATH=/usr/lib/llvm-19/lib
# The kernel must be built, and modules against it, with Debian's rustc-web:
# it is the one whose core sources (rust-web-src) are installed.
KRUSTC=/usr/bin/rustc
KRUSTDOC=/usr/bin/rustdoc
KLLVM=-19
export CMA_CACHE CMA_TOOLS CMA_VENV LIBCLANG_PATH
