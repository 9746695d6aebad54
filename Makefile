# The README's two commands: `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
APT_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang lld
RUST_TARGETS := aarch64-unknown-linux-gnu aarch64-linux-android x86_64-linux-android
TVM_PIN := apache-tvm==0.27.0.post1
# onnxruntime runs the exported ONNX graphs in the aon tests (tests/scripts/ort_check.py).
ORT_PINS := onnxruntime==1.23.2 numpy==2.2.6 onnx==1.23.2
# The tiny random Gemma 3 the cross tests compile.
DEMO_MODEL := fixtures/models/gemma3-tiny
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup build test test-cross test-kernels test-embedding android-lib android-aar lint docs-check demo bench fuzz clean fixtures-archives real-models test-real test-base

help:
	@echo "make demo        the real Gemma 3 270M to q4bf16 for x86_64 + arm64 Android/Linux: run, validate under qemu; then aon"
	@echo "make test        lint + every test (host, and the runtime under qemu-aarch64)"
	@echo "make setup       install apt packages and rustup targets (idempotent)"
	@echo "make build       release build of alc and aon"
	@echo "make lint        cargo fmt --check and clippy -D warnings"
	@echo "make docs-check  check that docs/cli.md matches --help and the C header matches runtime/src/capi"
	@echo "make android-lib libava_runtime.so (C API + JNI) for arm64 Android and the host, stripped"
	@echo "make android-aar target/android-aar/ava-runtime-<version>.aar + .pom (arm64-v8a, x86_64)"
	@echo "make bench       benchmarks (results in docs/benchmarks.md)"
	@echo "make fuzz        run the fuzz targets briefly (nightly toolchain, cargo-fuzz)"
	@echo "make real-models fetch the real Gemma 3 270M GGUF + tokenizer into .cache/models and convert it"
	@echo "make test-real   real-models, then the ignored real_* tests against the converted model"
	@echo "make test-base   an albert-base-v2-sized ALBERT (generated, random) through every aon stage"

setup:
	@./scripts/ensure-dev-null
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  $(SUDO) apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@installed=$$(rustup target list --installed); for t in $(RUST_TARGETS); do \
	  echo "$$installed" | grep -qx $$t || rustup target add $$t >/dev/null 2>&1 || { echo "setup: rustup target add $$t failed"; exit 1; }; \
	done
	@# The TVM kernel driver's Python (ava-targets runs .venv/bin/python targets/driver/build.py).
	@if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("apache-tvm") != "$(subst apache-tvm==,,$(TVM_PIN))")' >/dev/null 2>&1; then \
	  echo "setup: creating .venv with $(TVM_PIN)"; \
	  python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check $(TVM_PIN) || { echo "setup: pip install $(TVM_PIN) failed"; exit 1; }; \
	fi
	@test -x .venv/bin/python || python3 -m venv .venv
	@.venv/bin/python -c 'import onnxruntime, numpy, onnx' >/dev/null 2>&1 || { echo "setup: installing $(ORT_PINS) into .venv"; \
	  .venv/bin/pip install -q --disable-pip-version-check $(ORT_PINS) || { echo "setup: pip install $(ORT_PINS) failed"; exit 1; }; }

build:
	$(CARGO) build --release --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p ava-runtime --features capi,jni,runner --all-targets -- -D warnings

test: setup lint
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory test-cross
	$(MAKE) --no-print-directory test-kernels
	$(MAKE) --no-print-directory test-embedding
	$(MAKE) --no-print-directory docs-check

# The runtime is what ships to arm64: its tests run under qemu-aarch64 (runner set in
# .cargo/config.toml), and it must build for Android without any C dependency.
# The tiny fixture compiled for linux-arm64 (f32 and q4bf16 archives, by `alc compile`, cached)
# is what runtime/tests/tvm.rs compares against the native backend under qemu.
CROSS_DIR := target/test-cross
test-cross:
	$(CARGO) build -q --bin alc
	@rm -f $(CROSS_DIR)/*.tar
	./target/debug/alc -q --cache-dir $(CROSS_DIR)/cache compile $(DEMO_MODEL) --quant f32 --target linux-arm64 -o $(CROSS_DIR)
	./target/debug/alc -q --cache-dir $(CROSS_DIR)/cache compile $(DEMO_MODEL) --quant q4bf16 --group-size 32 --target linux-arm64 -o $(CROSS_DIR)
	AVA_TVM_TEST_MODEL=$$(ls -d $(CURDIR)/$(CROSS_DIR)/*.tar | paste -sd:) $(CARGO) test -p ava-runtime --target aarch64-unknown-linux-gnu
	$(CARGO) build -p ava-runtime --target aarch64-linux-android

# The TVM driver's int8 kernels of every ISA variant (x86 presets run here, arm64 ones under
# qemu-aarch64 through a C host) against numpy, exactly; see docs/tvm.md.
test-kernels:
	.venv/bin/python targets/driver/tests/test_int8mm.py --quick

# The C ABI and the JNI bindings: in process, from C (host and qemu-aarch64) and from the JVM,
# against libava_runtime.so built in the dev profile. See docs/embedding.md.
test-embedding:
	./scripts/test-embedding

# Release, stripped, exports and NEEDED checked; sizes: scripts/bench/android-lib.sh.
android-lib: setup
	./scripts/android-lib

# The Android library: classes.jar (Java 8), manifest, R8 keep rules, arm64-v8a and x86_64
# libraries; the POM beside it. See docs/embedding.md.
android-aar: setup
	./scripts/android-aar

docs-check:
	./scripts/docs-check

# The real Gemma 3 270M (fetched once, as make real-models does) compiled and run; the tiny
# fixture when offline. Stages cached under target/demo-cache. See scripts/demo.
demo: setup
	$(CARGO) build --release --bins
	./scripts/demo

# Measures, never asserts: each script under scripts/bench/ rewrites its section of
# docs/benchmarks.md. Needs the real models (make real-models) and builds llama.cpp as the peer.
bench: setup
	$(CARGO) build --release --bins
	./scripts/bench.sh

# Every fuzz target (fuzz/fuzz_targets/), its committed seeds (fuzz/seeds/<target>, made by
# fixtures/gen/make_fuzz_seeds.py or copied from fixtures/) and dictionary (fuzz/dicts/).
# `make fuzz` runs each for FUZZ_SECONDS; docs/security.md records the long runs.
FUZZ_TARGETS := archive_reader checkpoint_loader gguf_reader onnx_reader albert_onnx gemma3_config albert_config runtime_archive
FUZZ_SECONDS ?= 20
FUZZ_MAX_LEN ?= 4096
FUZZ_MAX_LEN_runtime_archive := 16384

fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	cd fuzz && $(CARGO) +nightly fuzz build -a
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; \
		seeds=; if [ -d seeds/$$t ]; then seeds=seeds/$$t; fi; \
		dict=; if [ -f dicts/$$t.dict ]; then dict=-dict=dicts/$$t.dict; fi; \
		len=$(FUZZ_MAX_LEN); if [ $$t = runtime_archive ]; then len=$(FUZZ_MAX_LEN_runtime_archive); fi; \
		echo "fuzz: $$t"; \
		$(CARGO) +nightly fuzz run -a $$t corpus/$$t $$seeds -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=$$len $$dict -print_final_stats=1; \
	done

# Regenerates the hostile archive corpus (committed) from its generator.
fixtures-archives:
	rm -rf fixtures/archives/bad && $(CARGO) run -q -p ava-packaging --example make_bad_archives -- fixtures/archives/bad

clean:
	$(CARGO) clean

# The real Gemma 3 270M (Gemma Terms of Use: cached in .cache/models, never committed).
# See scripts/fetch-real-models and docs/formats/gguf-import.md.
real-models:
	$(CARGO) build --release --bins
	ALC=target/release/alc ./scripts/fetch-real-models

test-real: real-models
	$(CARGO) test --test cli -- --ignored real_
	$(MAKE) --no-print-directory test-base

# fixtures/gen/make_albert_base.py writes the model into the test's temporary directory.
test-base: setup
	$(CARGO) test --test cli -- --ignored albert_base
