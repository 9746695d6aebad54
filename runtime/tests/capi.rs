//! The C ABI in process (feature `capi`): greedy text through the streaming callback equals
//! the golden, cancellation from another thread, `BUSY` for overlapping calls, multi-turn and
//! reset, and error codes with messages. `make test-embedding` runs it, then drives the same
//! calls from C and Java against the built library.
#![cfg(feature = "capi")]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::mpsc;

use ava_runtime::capi::*;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn golden_prompt() -> serde_json::Value {
    let bytes = std::fs::read(fixture("fixtures/models/gemma3-tiny/goldens.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["prompts"][0].clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    // SAFETY: always a valid NUL-terminated string.
    unsafe { CStr::from_ptr(ava_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn open(path: &Path) -> *mut AvaEngine {
    let mut engine = ptr::null_mut();
    // SAFETY: valid string and out pointer.
    let status = unsafe { ava_engine_open(c_path(path).as_ptr(), &mut engine) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    engine
}

fn new_session(engine: *const AvaEngine, context: u32) -> *mut AvaSession {
    let mut session = ptr::null_mut();
    // SAFETY: a live engine and a valid out pointer.
    let status = unsafe { ava_session_new(engine, context, &mut session) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    session
}

fn greedy(max_tokens: u32) -> AvaGenerateOptions {
    AvaGenerateOptions {
        max_tokens,
        ignore_eos: true,
        ..ava_generate_options_default()
    }
}

/// What the callback collects, and an optional hook run on every piece.
#[derive(Default)]
struct Collected {
    text: String,
    tokens: Vec<u32>,
    on_piece: Option<Box<dyn FnMut(usize)>>,
}

unsafe extern "C" fn collect(piece: *const c_char, token: u32, user: *mut c_void) -> c_int {
    // SAFETY: `user` is the `Collected` passed with this callback; `piece` is a C string.
    let c = unsafe { &mut *(user as *mut Collected) };
    c.text
        .push_str(&unsafe { CStr::from_ptr(piece) }.to_string_lossy());
    c.tokens.push(token);
    let n = c.tokens.len();
    if let Some(hook) = c.on_piece.as_mut() {
        hook(n);
    }
    0
}

fn generate(session: *mut AvaSession, prompt: &[u32], opts: &AvaGenerateOptions) -> Collected {
    let mut out = Collected::default();
    generate_into(session, prompt, opts, &mut out);
    out
}

fn generate_into(
    session: *mut AvaSession,
    prompt: &[u32],
    opts: &AvaGenerateOptions,
    out: &mut Collected,
) {
    // SAFETY: live session, valid slices, callback matching `out`.
    let status = unsafe {
        ava_session_generate(
            session,
            prompt.as_ptr(),
            prompt.len(),
            opts,
            Some(collect),
            out as *mut Collected as *mut c_void,
        )
    };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
}

fn last_result(session: *const AvaSession) -> AvaGenerateResult {
    let mut r = std::mem::MaybeUninit::uninit();
    // SAFETY: live session, valid out pointer (written on success).
    let status = unsafe { ava_session_last_result(session, r.as_mut_ptr()) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    // SAFETY: written by the successful call.
    unsafe { r.assume_init() }
}

#[test]
fn streamed_greedy_text_equals_the_golden() {
    let p = golden_prompt();
    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    let session = new_session(engine, 256);
    // The engine may go first: the session keeps the model alive.
    // SAFETY: freed once, no call running.
    unsafe { ava_engine_free(engine) };
    let out = generate(session, &ids(&p["input_ids"]), &greedy(32));
    assert_eq!(out.tokens, ids(&p["greedy_ids"]));
    assert_eq!(out.text, p["greedy_text"].as_str().unwrap());
    let r = last_result(session);
    assert_eq!(r.stop_reason, AvaStopReason::MaxTokens);
    assert_eq!(r.n_tokens, 32);
    assert_eq!(r.context, 256);
    assert_eq!(
        r.timings.prefill_tokens as usize,
        ids(&p["input_ids"]).len()
    );
    assert_eq!(r.timings.decode_tokens, 31);
    // SAFETY: freed once, no call running.
    unsafe { ava_session_free(session) };
}

/// Bytes of the KV cache of a fresh session made by `ava_session_new` on an engine opened with
/// `kv` in its options, and the greedy tokens it generates.
fn open_options_session(model: &Path, kv: u32) -> (u64, Vec<u32>) {
    let p = golden_prompt();
    let options = AvaOpenOptions {
        kv_cache: kv,
        ..ava_open_options_default()
    };
    let (path, mut engine) = (c_path(model), ptr::null_mut());
    // SAFETY: valid strings, options and out pointer.
    let status = unsafe { ava_engine_open_with(path.as_ptr(), &options, &mut engine) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    let session = new_session(engine, 256);
    let mut bytes = 0u64;
    // SAFETY: a live session and a valid out pointer.
    let status = unsafe { ava_session_kv_cache_bytes(session, &mut bytes) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    let out = generate(session, &ids(&p["input_ids"]), &greedy(32));
    // SAFETY: freed once, no call running.
    unsafe {
        ava_session_free(session);
        ava_engine_free(engine);
    }
    (bytes, out.tokens)
}

#[test]
fn open_options_choose_the_kv_cache_of_sessions() {
    let model = fixture("fixtures/models/gemma3-tiny");
    let cfg = ava_core::Gemma3Config::from_json(
        &model.join("config.json"),
        &serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap(),
    )
    .unwrap();
    let golden = ids(&golden_prompt()["greedy_ids"]);
    let (f32_bytes, f32_tokens) = open_options_session(&model, AvaKvCache::F32 as u32);
    let f32_planes = ava_runtime::KvCache::bytes_for(&cfg, 256, ava_runtime::KvDtype::F32);
    assert_eq!(f32_bytes, f32_planes as u64);
    assert_eq!(f32_tokens, golden);
    let (f16_bytes, f16_tokens) = open_options_session(&model, AvaKvCache::F16 as u32);
    assert_eq!(
        f16_bytes * 2,
        f32_bytes,
        "f16 planes are half of f32's before first use"
    );
    assert_eq!(f16_tokens, golden);
    let (q8_bytes, _) = open_options_session(&model, AvaKvCache::Q8 as u32);
    assert!(q8_bytes < f16_bytes, "{q8_bytes} >= {f16_bytes}");

    let options = AvaOpenOptions {
        kv_cache: 7,
        ..ava_open_options_default()
    };
    let (path, mut engine) = (c_path(&model), ptr::null_mut());
    // SAFETY: valid strings, options and out pointer; the value is checked before use.
    let status = unsafe { ava_engine_open_with(path.as_ptr(), &options, &mut engine) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert_eq!(last_error(), "kv_cache 7 is not an AvaKvCache");
    assert!(engine.is_null());
}

#[test]
fn sessions_take_a_kv_cache_type() {
    let p = golden_prompt();
    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    for kv in [AvaKvCache::F32, AvaKvCache::F16] {
        let mut session = ptr::null_mut();
        // SAFETY: a live engine and a valid out pointer.
        let status = unsafe { ava_session_new_with_kv_cache(engine, 256, kv as u32, &mut session) };
        assert_eq!(status, AvaStatus::Ok, "{}", last_error());
        let out = generate(session, &ids(&p["input_ids"]), &greedy(32));
        assert_eq!(out.tokens, ids(&p["greedy_ids"]), "{kv:?}");
        // SAFETY: freed once, no call running.
        unsafe { ava_session_free(session) };
    }
    let mut session = ptr::null_mut();
    // SAFETY: as above; the value is checked before use.
    let status = unsafe { ava_session_new_with_kv_cache(engine, 256, 7, &mut session) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert_eq!(last_error(), "kv_cache 7 is not an AvaKvCache");
    assert!(session.is_null());
    // SAFETY: freed once, no call running.
    unsafe { ava_engine_free(engine) };
}

#[test]
fn engines_run_on_the_threads_they_are_opened_with() {
    let p = golden_prompt();
    let model = c_path(&fixture("fixtures/models/gemma3-tiny"));
    for threads in [1, 3] {
        let mut engine = ptr::null_mut();
        // SAFETY: valid strings and out pointer; NULL options trust nothing.
        let status = unsafe {
            ava_engine_open_with_threads(model.as_ptr(), ptr::null(), threads, &mut engine)
        };
        assert_eq!(status, AvaStatus::Ok, "{}", last_error());
        let session = new_session(engine, 256);
        let out = generate(session, &ids(&p["input_ids"]), &greedy(32));
        assert_eq!(out.tokens, ids(&p["greedy_ids"]), "{threads} threads");
        // SAFETY: freed once, no call running.
        unsafe {
            ava_session_free(session);
            ava_engine_free(engine);
        }
    }
    let mut engine = ptr::null_mut();
    // SAFETY: as above; the count is checked before any thread starts.
    let status =
        unsafe { ava_engine_open_with_threads(model.as_ptr(), ptr::null(), 5000, &mut engine) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert!(
        last_error().contains("between 1 and 1024"),
        "{}",
        last_error()
    );
    assert!(engine.is_null());
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let p = golden_prompt();
    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    let text = CString::new(p["prompt"].as_str().unwrap()).unwrap();
    let mut tokens = AvaTokens {
        ids: ptr::null_mut(),
        len: 0,
    };
    // SAFETY: live engine, valid string and out pointer.
    let status = unsafe { ava_tokenize(engine, text.as_ptr(), true, &mut tokens) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    // SAFETY: `tokens` holds `len` ids from the library.
    let got = unsafe { std::slice::from_raw_parts(tokens.ids, tokens.len) }.to_vec();
    assert_eq!(got, ids(&p["input_ids"]));
    let mut s = ptr::null_mut();
    // SAFETY: live engine, ids from the library, valid out pointer.
    let status = unsafe { ava_detokenize(engine, tokens.ids, tokens.len, &mut s) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    // SAFETY: a string from the library, freed below.
    assert_eq!(unsafe { CStr::from_ptr(s) }.to_str().unwrap(), p["prompt"]);
    // SAFETY: each freed once.
    unsafe {
        ava_string_free(s);
        ava_tokens_free(&mut tokens);
        ava_engine_free(engine);
    }
    assert!(tokens.ids.is_null() && tokens.len == 0);
}

/// Pointers that cross to the helper thread (the C contract allows cancel from any thread).
#[derive(Clone, Copy)]
struct SendPtr(*mut AvaSession);
// SAFETY: sessions are documented as shareable for cancel and for BUSY-checked calls.
unsafe impl Send for SendPtr {}

#[test]
fn cancel_from_another_thread_stops_generation() {
    let p = golden_prompt();
    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    let session = new_session(engine, 512);
    let (at_token, wait_token) = mpsc::channel::<()>();
    let (cancelled, wait_cancel) = mpsc::channel::<()>();
    let shared = SendPtr(session);
    let helper = std::thread::spawn(move || {
        let s = shared;
        wait_token.recv().unwrap();
        // While the session generates, another call is refused at once.
        let mut r = std::mem::MaybeUninit::uninit();
        // SAFETY: live session; the out pointer is not written on failure.
        let busy = unsafe { ava_session_last_result(s.0, r.as_mut_ptr()) };
        // SAFETY: live session.
        let status = unsafe { ava_session_cancel(s.0) };
        cancelled.send(()).unwrap();
        (busy, status, last_error())
    });
    let mut out = Collected {
        on_piece: Some(Box::new(move |n| {
            if n == 3 {
                at_token.send(()).unwrap();
                wait_cancel.recv().unwrap();
            }
        })),
        ..Collected::default()
    };
    generate_into(session, &ids(&p["input_ids"]), &greedy(400), &mut out);
    let (busy, status, message) = helper.join().unwrap();
    assert_eq!(busy, AvaStatus::Busy);
    assert!(message.contains("another call"), "{message}");
    assert_eq!(status, AvaStatus::Ok);
    let r = last_result(session);
    assert_eq!(r.stop_reason, AvaStopReason::Cancelled);
    assert_eq!(r.n_tokens, 3);
    assert_eq!(out.tokens.len(), 3);
    // A cancel that arrived earlier does not touch the next generation.
    // SAFETY: live session.
    unsafe { ava_session_cancel(session) };
    // SAFETY: live session.
    assert_eq!(unsafe { ava_session_reset(session) }, AvaStatus::Ok);
    let again = generate(session, &ids(&p["input_ids"]), &greedy(32));
    assert_eq!(again.tokens, ids(&p["greedy_ids"]));
    // SAFETY: each freed once, no call running.
    unsafe {
        ava_session_free(session);
        ava_engine_free(engine);
    }
}

#[test]
fn chat_turns_continue_and_reset_forgets() {
    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    let session = new_session(engine, 512);
    let chat = |text: &str| {
        let text = CString::new(text).unwrap();
        let mut out = Collected::default();
        let opts = greedy(8);
        // SAFETY: live session, valid string, callback matching `out`.
        let status = unsafe {
            ava_session_chat(
                session,
                text.as_ptr(),
                &opts,
                Some(collect),
                &mut out as *mut Collected as *mut c_void,
            )
        };
        assert_eq!(status, AvaStatus::Ok, "{}", last_error());
        last_result(session)
    };
    let first = chat("Hello");
    let second = chat("And then?");
    assert!(second.position > first.position);
    // The second turn runs only its new tokens (plus the pending one).
    assert!(second.timings.prefill_tokens < second.position - first.position + 1);
    // SAFETY: live session.
    assert_eq!(unsafe { ava_session_reset(session) }, AvaStatus::Ok);
    let mut r = std::mem::MaybeUninit::uninit();
    // SAFETY: live session; not written on failure.
    let status = unsafe { ava_session_last_result(session, r.as_mut_ptr()) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    let again = chat("Hello");
    assert_eq!(again.position, first.position);
    // SAFETY: each freed once, no call running.
    unsafe {
        ava_session_free(session);
        ava_engine_free(engine);
    }
}

#[test]
fn errors_come_back_as_codes_and_messages() {
    let mut engine = ptr::null_mut();
    let missing = fixture("fixtures/models/no-such-model");
    // SAFETY: valid string and out pointer.
    let status = unsafe { ava_engine_open(c_path(&missing).as_ptr(), &mut engine) };
    assert_eq!(status, AvaStatus::Io);
    assert!(engine.is_null());
    assert!(last_error().contains("no-such-model"), "{}", last_error());

    let bad = fixture("fixtures/archives/bad/checksum.tar");
    // SAFETY: valid string and out pointer.
    let status = unsafe { ava_engine_open(c_path(&bad).as_ptr(), &mut engine) };
    assert_eq!(status, AvaStatus::Archive, "{}", last_error());
    assert!(!last_error().is_empty());

    // SAFETY: NULL is rejected before anything is read.
    let status = unsafe { ava_engine_open(ptr::null(), &mut engine) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert_eq!(last_error(), "path is NULL");

    let engine = open(&fixture("fixtures/models/gemma3-tiny"));
    let session = new_session(engine, 16);
    let long: Vec<u32> = vec![2; 20];
    // SAFETY: live session, valid slice, no callback.
    let status = unsafe {
        ava_session_generate(
            session,
            long.as_ptr(),
            long.len(),
            ptr::null(),
            None,
            ptr::null_mut(),
        )
    };
    assert_eq!(status, AvaStatus::ContextFull);
    let zero = greedy(0);
    // SAFETY: live session, valid slice and options.
    let status =
        unsafe { ava_session_generate(session, long.as_ptr(), 1, &zero, None, ptr::null_mut()) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert!(last_error().contains("max_tokens"));
    // SAFETY: each freed once (NULL is ignored).
    unsafe {
        ava_session_free(session);
        ava_engine_free(engine);
        ava_engine_free(ptr::null_mut());
    }
}

/// Classification itself is checked against `aon classify` by `scripts/test-embedding` (it
/// needs an archive from `aon compile`); here, the classifier's error paths.
#[test]
fn classifier_errors_come_back_as_codes_and_messages() {
    let open_classifier = |path: &Path| {
        let mut c = ptr::dangling_mut::<AvaClassifier>();
        // SAFETY: valid string and out pointer.
        let status = unsafe { ava_classifier_open(c_path(path).as_ptr(), &mut c) };
        assert!(c.is_null(), "out is cleared on failure");
        status
    };
    let missing = fixture("fixtures/models/no-such-model.tar");
    assert_eq!(open_classifier(&missing), AvaStatus::Io, "{}", last_error());
    assert!(
        last_error().contains("no-such-model.tar"),
        "{}",
        last_error()
    );
    let bad = fixture("fixtures/archives/bad/checksum.tar");
    assert_eq!(
        open_classifier(&bad),
        AvaStatus::Archive,
        "{}",
        last_error()
    );
    let gemma = fixture("fixtures/models/gemma3-tiny");
    assert_eq!(
        open_classifier(&gemma),
        AvaStatus::Model,
        "{}",
        last_error()
    );
    assert!(last_error().contains("model.onnx"), "{}", last_error());

    let mut r = AvaClassification {
        intent: ptr::dangling_mut::<c_char>(),
        score: 1.0,
        index: 1,
        out_of_scope: true,
        top: ptr::null_mut(),
        n_top: 0,
        n_tokens: 0,
        latency_ms: 0.0,
    };
    // SAFETY: NULL is rejected before anything is read; `r` is writable.
    let status = unsafe { ava_classify(ptr::null(), c"hi".as_ptr(), 3, &mut r) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    assert!(
        r.intent.is_null() && !r.out_of_scope,
        "out is cleared on failure"
    );
    assert_eq!(last_error(), "classifier is NULL");
    let mut n = 0;
    // SAFETY: NULL is rejected before anything is read.
    let status = unsafe { ava_classifier_num_labels(ptr::null(), &mut n) };
    assert_eq!(status, AvaStatus::InvalidArgument);
    // SAFETY: a zeroed classification and NULL are ignored.
    unsafe {
        ava_classification_free(&mut r);
        ava_classification_free(ptr::null_mut());
        ava_classifier_free(ptr::null_mut());
    }
}

#[test]
fn open_with_a_policy_checks_the_trusted_keys() {
    let model = c_path(&fixture("fixtures/models/gemma3-tiny"));
    let mut engine = ptr::null_mut();
    // NULL options trust nothing; the model still opens (native backend).
    // SAFETY: valid string and out pointer.
    let status = unsafe { ava_engine_open_with(model.as_ptr(), ptr::null(), &mut engine) };
    assert_eq!(status, AvaStatus::Ok, "{}", last_error());
    // SAFETY: opened above.
    unsafe { ava_engine_free(engine) };

    let good = CString::new(
        ava_packaging::SecretKey::from_seed(&[5; 32])
            .public()
            .to_file_text()
            .trim(),
    )
    .unwrap();
    let bad = CString::new("not a key").unwrap();
    for (key, ok) in [(&good, true), (&bad, false)] {
        let keys = [key.as_ptr()];
        let options = AvaOpenOptions {
            trusted_keys: keys.as_ptr(),
            n_trusted_keys: 1,
            allow_unsigned_kernels: false,
            kv_cache: AvaKvCache::F16 as u32,
        };
        let mut engine = ptr::null_mut();
        // SAFETY: valid strings, options and out pointer.
        let status = unsafe { ava_engine_open_with(model.as_ptr(), &options, &mut engine) };
        if ok {
            assert_eq!(status, AvaStatus::Ok, "{}", last_error());
            // SAFETY: opened above.
            unsafe { ava_engine_free(engine) };
        } else {
            assert_eq!(status, AvaStatus::InvalidArgument);
            assert!(last_error().contains("trusted key"), "{}", last_error());
            assert!(engine.is_null());
        }
    }
    let options = AvaOpenOptions {
        trusted_keys: ptr::null(),
        n_trusted_keys: 3,
        allow_unsigned_kernels: true,
        kv_cache: AvaKvCache::F16 as u32,
    };
    // SAFETY: the NULL key list is rejected before it is read.
    let status = unsafe { ava_engine_open_with(model.as_ptr(), &options, &mut engine) };
    assert_eq!(status, AvaStatus::InvalidArgument);
}

/// An app pins its release key: the archive that key signed has its kernel library loaded
/// (its constructor leaves a file behind); trusting nothing, or another key, it is not.
#[test]
fn a_pinned_key_loads_the_kernels_of_the_archive_it_signed() {
    use ava_packaging::{write_archive, Compression, InputFile, PackageSpec, Role, SecretKey};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let canary = dir.join("constructor-ran");
    let src = dir.join("canary.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n\
             __attribute__((constructor)) static void planted(void) {{\n\
               FILE *f = fopen(\"{}\", \"w\"); if (f) {{ fputs(\"ran\", f); fclose(f); }}\n\
             }}\n",
            canary.display()
        ),
    )
    .unwrap();
    let lib = dir.join("libmodel.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success());
    let target = ava_core::Target::host().expect("a kernel target for this machine");
    let table = dir.join("kernels.json");
    std::fs::write(
        &table,
        format!(r#"{{"format_version": 1, "target": "{target}", "requires": [], "kernels": []}}"#),
    )
    .unwrap();
    let model = fixture("fixtures/models/gemma3-tiny");
    let mut inputs: Vec<InputFile> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|name| InputFile {
            source: model.join(name),
            path: name.to_string(),
            role: Role::from_path(name),
        })
        .collect();
    for (source, name) in [(lib, "libmodel.so"), (table, "kernels.json")] {
        let path = format!("lib/{target}/{name}");
        inputs.push(InputFile {
            role: Role::from_path(&path),
            source,
            path,
        });
    }
    let release = SecretKey::from_seed(&[11; 32]);
    let spec = PackageSpec {
        name: "gemma3-pinned".into(),
        version: "1".into(),
        family: "gemma3".into(),
        quantization: "f32".into(),
        target: target.name().parse().unwrap(),
        created_by: ava_packaging::CreatedBy {
            tool: "test".into(),
            version: "0".into(),
            git_commit: "none".into(),
        },
        source: ava_packaging::Source::default(),
        stages: Default::default(),
        sign_with: Some(release.clone()),
    };
    let archive = dir.join("pinned.tar");
    write_archive(&spec, &inputs, &archive, Compression::None, &mut |_| {}).unwrap();
    let archive = c_path(&archive);

    let open = |key: Option<&SecretKey>| {
        let line = key.map(|k| CString::new(k.public().to_file_text().trim()).unwrap());
        let keys: Vec<*const c_char> = line.iter().map(|l| l.as_ptr()).collect();
        let options = AvaOpenOptions {
            trusted_keys: keys.as_ptr(),
            n_trusted_keys: keys.len(),
            allow_unsigned_kernels: false,
            kv_cache: AvaKvCache::F16 as u32,
        };
        let mut engine = ptr::null_mut();
        // SAFETY: valid strings, options and out pointer.
        let status = unsafe { ava_engine_open_with(archive.as_ptr(), &options, &mut engine) };
        if status == AvaStatus::Ok {
            // SAFETY: opened above.
            unsafe { ava_engine_free(engine) };
        }
        status
    };
    assert_eq!(open(None), AvaStatus::Ok, "{}", last_error());
    assert_eq!(
        open(Some(&SecretKey::from_seed(&[12; 32]))),
        AvaStatus::Ok,
        "{}",
        last_error()
    );
    assert!(!canary.exists(), "an untrusted library was loaded");
    open(Some(&release));
    assert!(canary.exists(), "the pinned key's library was not loaded");
}
