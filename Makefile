# SPDX-License-Identifier: GPL-2.0
# cma: entry points. `make help` lists them.
#
# The module is built against KDIR: by default our own Rust-enabled test
# kernel (built once by scripts/kernel.sh and cached under ~/.cache/cma);
# pass KDIR=/path/to/your/kernel/build to use your own.

SHELL := /bin/bash
TOP := $(CURDIR)
FLAVOUR ?= normal
# Which of the test kernels: 6.12 (the LTS line, LLVM) or 7.3 (the newest,
# GCC). `make test KERNEL=7.3` runs the suite on 7.3.
KERNEL ?= 6.12
export KERNEL
CACHE := $(shell . scripts/env.sh; echo $$CMA_CACHE)
# The one version number (VERSION): the module's MODULE_VERSION (Kbuild),
# the man page, cma.pc; dkms.conf and the Cargo workspace repeat it, and
# `make lint` checks that they do.
VERSION := $(shell cat VERSION)
BINDGEN ?= $(CACHE)/tools/bin/bindgen
KRUSTC ?= /usr/bin/rustc
ifeq ($(origin KDIR),undefined)
OWN_KERNEL := 1
# Recursively expanded: evaluated in recipes, after `deps` has installed what
# the cache key depends on.
KDIR = $(shell scripts/kernel.sh --kernel $(KERNEL) --flavour $(FLAVOUR) --print-dir)
endif
# The module for 6.12's normal flavour is built in place (cma.ko at the
# top); the others build a copy of the sources under out/, so all can coexist
# (scripts/vm.sh finds each where this puts it).
ifeq ($(KERNEL)-$(FLAVOUR),6.12-normal)
MODDIR := $(TOP)
else ifeq ($(KERNEL),6.12)
MODDIR := $(TOP)/out/module-$(FLAVOUR)
else
MODDIR := $(TOP)/out/module-$(KERNEL)-$(FLAVOUR)
endif
# Modules are built with the kernel's own compiler: LLVM for a clang-built
# kernel (our 6.12), GCC otherwise (our 7.3, and the distributions' kernels).
KCOMPILER = $(if $(shell grep -s '^CONFIG_CC_IS_CLANG=y' $(KDIR)/.config),LLVM=-19)
KMAKE = $(MAKE) -C $(KDIR) M=$(MODDIR) $(KCOMPILER) RUSTC=$(KRUSTC) BINDGEN=$(BINDGEN) $(KMAKE_ARGS)
MODULE_SOURCES := Kbuild VERSION include/uapi/cma.h $(wildcard rust/glue/*.[ch]) \
	$(filter-out %_generated.rs,$(wildcard rust/*.rs rust/compat/*.rs rust/compat/*/*.rs))
CARGO_TARGET := $(TOP)/userspace/target/release
# The C libraries: libcma.so (the C API, a Rust cdylib) and
# libcma-preload.so (process_vm_readv/writev through /dev/cma: the Rust
# staticlib linked with shim.c, exporting only what it interposes).
LIBDIR := $(TOP)/out/lib
# libxpmem.so: XPMEM's API over cma's maps (include/xpmem.h), in C over
# libcma; out/xpmem is the prefix to build an MPI stack --with-xpmem against.
LIBS := $(LIBDIR)/libcma.so $(LIBDIR)/libcma-preload.so $(LIBDIR)/pkgconfig/cma.pc \
	$(LIBDIR)/libxpmem.so
C_TESTS := tests/c/cma_abi_test tests/c/libcma_test tests/c/mpi_check \
	tests/c/mpi_check_mpich tests/c/seccomp_deny tests/c/xpmem_test tests/c/pvm_repeat_bench \
	tests/c/map_placement_bench tests/c/mpi_coll_bench

.PHONY: all module deps kernel userspace libs ctests ucx-xpmem test test-debug fuzz stress run bench bench-mpi man install uninstall clean help fmt lint

all: module

help:
	@echo "cma make targets:"
	@echo "  make            build cma.ko (builds the cached test kernel first if needed)"
	@echo "  make test       everything from scratch: deps, kernel, module, userspace, VM suite"
	@echo "  make test-debug the suite on the debug kernel (KASAN, KFENCE, lockdep, kmemleak, UBSAN...)"
	@echo "  make fuzz       the long ioctl fuzzing run on the debug kernel (FUZZ_CALLS=5000000, FUZZ_SEED=...)"
	@echo "  make stress     load and faults on the debug kernel: 16 processes all to all, three"
	@echo "                  60 s waves with kills, stops and module reloads; the OOM test (STRESS_SECS=60)"
	@echo "  make run        boot the test VM, load the module, run the cma CLI"
	@echo "  make bench      run \`cma bench\` in the test VM (BENCH_ARGS=--quick for a smoke run);"
	@echo "                  table on stdout, out/bench.json, out/bench.svg"
	@echo "  make bench-mpi  HPCC (Open MPI, 2 ranks) without single copy, with process_vm_readv and"
	@echo "                  through /dev/cma, plus ucx_perftest: the seed's table; out/bench-mpi.json"
	@echo "  make deps       install missing dependencies (scripts/deps.sh)"
	@echo "  make kernel     build or reuse the cached test kernel (scripts/kernel.sh)"
	@echo "  make userspace  build the Rust userspace workspace (library, CLI, suite)"
	@echo "  make libs       out/lib: libcma.so (C API), libcma-preload.so (process_vm_readv through"
	@echo "                  /dev/cma for unmodified programs), libxpmem.so (XPMEM's API over"
	@echo "                  cma's maps; out/xpmem is its prefix), pkgconfig/cma.pc"
	@echo "  make ucx-xpmem  UCX from Debian's source package built --with-xpmem over libxpmem.so"
	@echo "                  (cached; scripts/ucx-xpmem.sh)"
	@echo "  make ctests     build the C tests (UAPI header, C API, the MPI data checker)"
	@echo "  make install    install the module (modules_install + depmod), CLI, libraries, headers,"
	@echo "                  man pages, udev rule, modprobe.d/modules-load.d (DESTDIR, PREFIX, KVER)"
	@echo "  make uninstall  remove what make install installed (its manifest)"
	@echo "  make fmt        rustfmt the module and the userspace workspace"
	@echo "  make lint       check formatting and run clippy on the userspace workspace and the module"
	@echo "  make clean      remove build products (not the kernel cache)"
	@echo "variables: KDIR=<kernel build dir> (your own Rust-enabled kernel), FLAVOUR=normal|debug,"
	@echo "           KERNEL=6.12|7.3 (which test kernel: make test KERNEL=7.3)"
	@echo "kernel cache: $(CACHE)"

deps:
	scripts/deps.sh

kernel: deps
ifdef OWN_KERNEL
	scripts/kernel.sh --kernel $(KERNEL) --flavour $(FLAVOUR) >/dev/null
else
	@echo "using KDIR=$(KDIR)"
endif

module: kernel
ifneq ($(MODDIR),$(TOP))
	mkdir -p $(MODDIR)
	cp --parents $(MODULE_SOURCES) $(MODDIR)/
endif
	$(KMAKE) modules

userspace: deps
	cd userspace && cargo build --release --workspace
	$(MAKE) libs

libs: $(LIBS)

$(LIBDIR)/libcma.so: $(CARGO_TARGET)/libcma_capi.so
	mkdir -p $(LIBDIR)
	cp $< $(LIBDIR)/libcma.so.0
	ln -sf libcma.so.0 $@

$(LIBDIR)/libcma-preload.so: userspace/preload/shim.c userspace/preload/exports.map \
		$(CARGO_TARGET)/libcma_preload.a
	mkdir -p $(LIBDIR)
	$(CC) -shared -fPIC -O2 -Wall -Werror -o $@ userspace/preload/shim.c \
		$(CARGO_TARGET)/libcma_preload.a -Wl,--version-script=userspace/preload/exports.map \
		-Wl,--gc-sections -Wl,-soname,libcma-preload.so -ldl -lpthread -lgcc_s -lm -lc

$(LIBDIR)/libxpmem.so: userspace/xpmem/xpmem.c include/xpmem.h include/libcma.h \
		include/uapi/cma.h $(LIBDIR)/libcma.so
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -Iinclude -o $(LIBDIR)/libxpmem.so.0 \
		userspace/xpmem/xpmem.c -Wl,-soname,libxpmem.so.0 -L$(LIBDIR) -lcma \
		-Wl,-rpath,'$$ORIGIN' -lpthread
	ln -sf libxpmem.so.0 $@
	mkdir -p out/xpmem/include out/xpmem/lib
	cp include/xpmem.h out/xpmem/include/
	ln -sf ../../lib/libxpmem.so.0 out/xpmem/lib/libxpmem.so
	ln -sf ../../lib/libxpmem.so.0 out/xpmem/lib/libxpmem.so.0
	ln -sf ../../lib/libcma.so.0 out/xpmem/lib/libcma.so.0

$(LIBDIR)/pkgconfig/cma.pc: scripts/cma.pc.in
	mkdir -p $(LIBDIR)/pkgconfig
	sed -e 's|@PREFIX@|$(TOP)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(TOP)/include|; s|@VERSION@|$(VERSION)|' $< > $@

ctests: $(C_TESTS)

tests/c/cma_abi_test: tests/c/cma_abi_test.c include/uapi/cma.h kernel
	$(CC) -O2 -Wall -Werror -I$(KDIR)/source/tools/testing/selftests -Iinclude/uapi \
		-o $@ $<

# The C API's suite: built with pkg-config, as a C user would.
tests/c/libcma_test: tests/c/libcma_test.c include/libcma.h include/uapi/cma.h kernel libs
	$(CC) -O2 -Wall -Werror -I$(KDIR)/source/tools/testing/selftests \
		$$(PKG_CONFIG_PATH=$(LIBDIR)/pkgconfig pkg-config --cflags cma) -o $@ $< \
		$$(PKG_CONFIG_PATH=$(LIBDIR)/pkgconfig pkg-config --libs cma) -Wl,-rpath,$(LIBDIR)

# The same process_vm_readv repeated: the system call, or the preload's
# ioctl and maps (docs/bench.md).
tests/c/pvm_repeat_bench: tests/c/pvm_repeat_bench.c
	$(CC) -O2 -Wall -Werror -o $@ $<

# The map column's control: local copies and copies through maps of the
# same pages (docs/bench.md).
tests/c/map_placement_bench: tests/c/map_placement_bench.c include/libcma.h libs
	$(CC) -O2 -Wall -Werror -Iinclude -o $@ $< -L$(LIBDIR) -lcma -Wl,-rpath,$(LIBDIR)

# libxpmem.so's suite: built against out/xpmem, as an XPMEM user would.
tests/c/xpmem_test: tests/c/xpmem_test.c include/xpmem.h include/libcma.h kernel libs
	$(CC) -O2 -Wall -Werror -I$(KDIR)/source/tools/testing/selftests -Iout/xpmem/include \
		-Iinclude -o $@ $< -Lout/xpmem/lib -lxpmem -L$(LIBDIR) -lcma -Wl,-rpath,$(LIBDIR)

# An MPI program that checks its data: point to point and vector collectives.
tests/c/mpi_check: tests/c/mpi_check.c
	mpicc.openmpi -O2 -Wall -Werror -o $@ $<
tests/c/mpi_check_mpich: tests/c/mpi_check.c
	mpicc.mpich -O2 -Wall -Werror -o $@ $<
# Scatter and all-to-all of large messages, each call timed (make bench-mpi).
tests/c/mpi_coll_bench: tests/c/mpi_coll_bench.c
	mpicc.openmpi -O2 -Wall -Werror -o $@ $<

# A launcher that runs a command under a seccomp filter refusing
# process_vm_readv/writev, as a container runtime's profile does.
tests/c/seccomp_deny: tests/c/seccomp_deny.c
	$(CC) -O2 -Wall -Werror -o $@ $<

# UCX from Debian's source package, built --with-xpmem over libxpmem.so
# (once: cached like the kernel), copied to out/ucx-xpmem, where the tests'
# unprivileged users can reach it (the cache is under root's home); its
# libraries come first in LD_LIBRARY_PATH. tests/mpi.sh runs its ucx_perftest.
ucx-xpmem: libs
	prefix=$$(scripts/ucx-xpmem.sh) && \
	if [ "$$(cat out/ucx-xpmem/.from 2>/dev/null)" != "$$prefix" ]; then \
		rm -rf out/ucx-xpmem && cp -a "$$prefix" out/ucx-xpmem && \
		echo "$$prefix" > out/ucx-xpmem/.from; \
	fi

test: module userspace libs ctests man ucx-xpmem
	scripts/vm.sh --flavour $(FLAVOUR) test

# The debug run also fuzzes, coverage-guided (KCOV): 300 000 calls, about
# two minutes under KASAN, KCOV and TCG.
DEBUG_FUZZ_CALLS ?= 300000
test-debug:
	CMA_FUZZ_CALLS=$${CMA_FUZZ_CALLS:-$(DEBUG_FUZZ_CALLS)} $(MAKE) test FLAVOUR=debug

# Load and faults on the debug kernel: 16 processes copying all to all in
# three 60-second waves (module reloaded between them), and the OOM test.
STRESS_SECS ?= 60
stress:
	$(MAKE) module userspace FLAVOUR=debug
	CMA_TESTS=stress_ CMA_STRESS_LOAD_SECS=$(STRESS_SECS) CMA_TEST_TIMEOUT=0 \
		scripts/vm.sh --flavour debug test

FUZZ_CALLS ?= 5000000
fuzz:
	$(MAKE) module userspace FLAVOUR=debug
	CMA_TESTS=fuzz CMA_FUZZ_CALLS=$(FUZZ_CALLS) $(if $(FUZZ_SEED),CMA_FUZZ_SEED=$(FUZZ_SEED)) \
		CMA_TEST_TIMEOUT=0 scripts/vm.sh --flavour debug test

run: module userspace
	scripts/vm.sh --flavour $(FLAVOUR) run

bench: module userspace
	scripts/vm.sh --flavour $(FLAVOUR) bench $(BENCH_ARGS)

# HPCC under Open MPI three ways (no single copy, process_vm_readv, /dev/cma)
# and ucx_perftest: the seed's table. BENCH_MPI_ARGS="--reps 5 --hpl-n 2000".
bench-mpi: module userspace libs ucx-xpmem tests/c/mpi_coll_bench
	scripts/vm.sh --flavour $(FLAVOUR) bench-mpi $(BENCH_MPI_ARGS)

fmt:
	rustfmt --edition 2021 rust/*.rs
	cd userspace && cargo fmt --all

# The module's clippy: a copy of its sources under out/ built by the
# clippy-driver that comes with the kernel's rustc, warnings as errors, for
# each kernel line (compat/ differs between them).
LINT_KERNELS ?= 6.12 7.3
lint:
	grep -qx 'PACKAGE_VERSION="$(VERSION)"' dkms.conf || { echo "dkms.conf: not version $(VERSION)"; exit 1; }
	grep -qx 'version = "$(VERSION)"' userspace/Cargo.toml || { echo "userspace/Cargo.toml: not version $(VERSION)"; exit 1; }
	rustfmt --edition 2021 --check rust/*.rs
	cd userspace && cargo fmt --all -- --check
	cd userspace && cargo clippy --release --workspace --all-targets -- -D warnings
	for k in $(LINT_KERNELS); do \
		rm -rf $(TOP)/out/module-lint-$$k && \
		$(MAKE) module KERNEL=$$k MODDIR=$(TOP)/out/module-lint-$$k \
			KMAKE_ARGS="CLIPPY=1 CLIPPY_DRIVER=$(dir $(KRUSTC))clippy-driver KRUSTFLAGS=-Dwarnings" \
			|| exit 1; \
	done

# Man pages: cma(1) from the CLI's --help (help2man), cma(4) from the UAPI
# header's kernel-doc (the kernel's own scripts/kernel-doc).
# It is run as its own #! line says: Perl in 6.12, Python in 7.x.
man: out/man/cma.1 out/man/cma.4

out/man/cma.1: $(CARGO_TARGET)/cma
	mkdir -p out/man
	help2man -N -n "single-copy cross-process memory transfer through /dev/cma" \
		--version-string=$(VERSION) $< > $@

out/man/cma.4: include/uapi/cma.h
	mkdir -p out/man
	$(KDIR)/source/scripts/kernel-doc -man $< > $@

# make install [DESTDIR=/staging] [PREFIX=/usr/local] [SYSCONFDIR=/etc]
# [KVER=<kernel release>]: the module (Kbuild's modules_install into
# /lib/modules/KVER/updates, then depmod), the CLI, the C API (header,
# libcma.so, pkg-config file), libcma-preload.so, man pages, the udev rule
# (group cma, mode 0660), modules-load.d and modprobe.d files. Every file is
# listed in PREFIX/share/cma/installed-files; make uninstall removes them.
PREFIX ?= /usr/local
INSTALL_VARS = TOP=$(TOP) KDIR=$(KDIR) KO=$(MODDIR)/cma.ko DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) \
	$(if $(SYSCONFDIR),SYSCONFDIR=$(SYSCONFDIR)) $(if $(KVER),KVER=$(KVER))
install: man
	$(INSTALL_VARS) scripts/install.sh install

uninstall:
	$(INSTALL_VARS) scripts/install.sh uninstall

clean:
	-$(KMAKE) clean
	rm -rf rust/cma_uapi_generated.rs $(C_TESTS) out/module-* $(LIBDIR)
	cd userspace && cargo clean
