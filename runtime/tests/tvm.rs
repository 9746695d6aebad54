//! The `tvm` backend against the native one on built models (`alc build` / `alc compile`): same
//! greedy tokens. `make test-cross` compiles the tiny fixture (f32 and q4bf16) for linux-arm64
//! and lists the archives in `AVA_TVM_TEST_MODEL` (`:`-separated), so this runs the TVM kernels
//! under qemu-aarch64; without the variable the test has nothing to load and passes (the x86_64
//! cases are in `tests/cli/tvm.rs`).

use std::path::Path;

use ava_runtime::{Backend, Engine, Error, GenerateOptions, KernelPolicy};

/// Directories or archives built for this machine, `:`-separated.
const MODEL_ENV: &str = "AVA_TVM_TEST_MODEL";

fn greedy_tokens(engine: &Engine, prompt: &[u32]) -> Vec<u32> {
    let options = GenerateOptions {
        max_tokens: 24,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let mut session = engine.session(256);
    session
        .generate(prompt, &options, &mut |_| true)
        .unwrap()
        .tokens
}

#[test]
fn tvm_backend_matches_native_on_a_built_model() {
    let Some(models) = std::env::var_os(MODEL_ENV) else {
        eprintln!("{MODEL_ENV} not set: nothing to compare");
        return;
    };
    for model in std::env::split_paths(&models) {
        compare(&model);
    }
}

fn compare(model: &Path) {
    // Nothing is trusted by default: the library is refused, `auto` falls back and says why.
    let refused = Engine::open_with(model, Backend::Tvm).err();
    assert!(
        matches!(refused, Some(Error::KernelsRefused(_))),
        "{refused:?}"
    );
    let fallback = Engine::open_with(model, Backend::Auto).unwrap();
    assert_eq!(fallback.backend_name(), "native");
    assert!(fallback.kernel_note().is_some());
    // These archives are built by this machine's `alc compile`: allowed explicitly here.
    let policy = KernelPolicy {
        allow_unsigned: true,
        ..KernelPolicy::default()
    };
    let native = Engine::open_with(model, Backend::Native).unwrap();
    let tvm = Engine::open_with_policy(model, Backend::Tvm, &policy).unwrap();
    let auto = Engine::open_with_policy(model, Backend::Auto, &policy).unwrap();
    assert_eq!(
        (
            native.backend_name(),
            tvm.backend_name(),
            auto.backend_name()
        ),
        ("native", "tvm", "tvm")
    );
    // Longer than the fixture's sliding window, so the windowed attention path runs too.
    let text = "Hello world, a prompt longer than the sliding window of the tiny model";
    let prompt = native.tokenizer().encode(text, true).unwrap();
    let expected = greedy_tokens(&native, &prompt);
    assert_eq!(
        greedy_tokens(&tvm, &prompt),
        expected,
        "{}",
        model.display()
    );
    assert_eq!(
        greedy_tokens(&auto, &prompt),
        expected,
        "{}",
        model.display()
    );
    eprintln!("{}: tvm == native", model.display());
}
