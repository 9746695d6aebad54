//! JNI entry points of `com.ava.runtime.AlcEngine` and `com.ava.runtime.AonClassifier`
//! (`bindings/android/`), feature `jni`.
//!
//! A Java `AlcEngine` holds one `AvaSession` (which keeps its engine alive) as a `long`, an
//! `AonClassifier` one `AvaClassifier`. The Java side serialises what must be serialised and
//! frees each handle once (see the Java classes); failures come back as
//! `com.ava.runtime.AlcException` carrying the status code and the runtime's message, and an
//! exception thrown by a listener propagates unchanged.
//!
//! Fields, methods and constructors are looked up by ID and called `_unchecked`: the checked
//! calls parse type signatures at run time, once per token in a generation, with a parser that
//! would add to the library's size.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use jni::objects::{
    JClass, JIntArray, JObject, JObjectArray, JString, JThrowable, JValue, JValueOwned,
};
use jni::signature::{Primitive, ReturnType};
use jni::sys::{jboolean, jdoubleArray, jfloat, jint, jintArray, jlong, jobjectArray, jstring};
use jni::JNIEnv;

use super::classify::AvaClassifier;
use super::error::{panic_message, CapiError};
use super::session::{AvaSession, Prompt};
use super::{AvaGenerateResult, AvaStatus};
use crate::generate::GenerateOptions;
use crate::policy::KernelPolicy;
use crate::sampling::SamplingParams;

const EXCEPTION_CLASS: &str = "com/ava/runtime/AlcException";
const INT: ReturnType = ReturnType::Primitive(Primitive::Int);
const LONG: ReturnType = ReturnType::Primitive(Primitive::Long);
const FLOAT: ReturnType = ReturnType::Primitive(Primitive::Float);
const BOOLEAN: ReturnType = ReturnType::Primitive(Primitive::Boolean);

/// Why a JNI call failed: a runtime error to throw, or a JNI error (usually a pending Java
/// exception, which is left to propagate).
enum Failure {
    Runtime(CapiError),
    Jni(jni::errors::Error),
}

impl From<CapiError> for Failure {
    fn from(e: CapiError) -> Self {
        Failure::Runtime(e)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure::Runtime(e.into())
    }
}

impl From<jni::errors::Error> for Failure {
    fn from(e: jni::errors::Error) -> Self {
        Failure::Jni(e)
    }
}

type JniResult<T> = std::result::Result<T, Failure>;

/// Runs `body`; on failure or panic, makes sure a Java exception is pending and returns `None`
/// (the value returned to Java then is never seen).
fn run<'l, T>(
    env: &mut JNIEnv<'l>,
    body: impl FnOnce(&mut JNIEnv<'l>) -> JniResult<T>,
) -> Option<T> {
    let failure = match panic::catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(f)) => f,
        Err(p) => Failure::Runtime(CapiError::new(AvaStatus::Internal, panic_message(&*p))),
    };
    if env.exception_check().unwrap_or(true) {
        return None;
    }
    let (status, message) = match failure {
        Failure::Runtime(e) => (e.status, e.message),
        Failure::Jni(e) => (AvaStatus::Internal, format!("JNI: {e}")),
    };
    // Nothing more can be done if even throwing fails; the JVM then reports its own error.
    let _ = throw(env, status, &message);
    None
}

fn throw(env: &mut JNIEnv<'_>, status: AvaStatus, message: &str) -> jni::errors::Result<()> {
    let msg = env.new_string(message)?;
    let class = env.find_class(EXCEPTION_CLASS)?;
    let init = env.get_method_id(&class, "<init>", "(ILjava/lang/String;)V")?;
    let args = [
        JValue::Int(status as jint).as_jni(),
        JValue::Object(&msg).as_jni(),
    ];
    // SAFETY: the constructor takes (int, String), the arguments given.
    let ex = unsafe { env.new_object_unchecked(&class, init, &args) }?;
    env.throw(JThrowable::from(ex))
}

/// Field `name` of `o`, whose class is `class`, with JNI type signature `sig` read as `ty`.
fn field<'l>(
    env: &mut JNIEnv<'l>,
    (o, class): (&JObject<'_>, &JClass<'_>),
    name: &str,
    sig: &str,
    ty: ReturnType,
) -> jni::errors::Result<JValueOwned<'l>> {
    let id = env.get_field_id(class, name, sig)?;
    env.get_field_unchecked(o, id, ty)
}

/// The session behind a handle from `nativeOpen`.
fn session<'a>(handle: jlong) -> JniResult<&'a AvaSession> {
    // SAFETY: the Java class passes only handles from `nativeOpen` that it has not freed, and
    // never frees one while another native call on it runs.
    unsafe { (handle as *const AvaSession).as_ref() }
        .ok_or_else(|| CapiError::invalid("the engine is closed").into())
}

fn string(env: &mut JNIEnv<'_>, s: &JString<'_>, what: &str) -> JniResult<String> {
    if s.is_null() {
        return Err(CapiError::invalid(format!("{what} is null")).into());
    }
    Ok(env.get_string(s)?.into())
}

fn int_array(env: &mut JNIEnv<'_>, a: &JIntArray<'_>, what: &str) -> JniResult<Vec<u32>> {
    if a.is_null() {
        return Err(CapiError::invalid(format!("{what} is null")).into());
    }
    let mut buf = vec![0; env.get_array_length(a)? as usize];
    env.get_int_array_region(a, 0, &mut buf)?;
    Ok(buf.into_iter().map(|x| x as u32).collect())
}

/// `AlcEngine.Options` fields as the runtime's options.
fn options(env: &mut JNIEnv<'_>, o: &JObject<'_>) -> JniResult<GenerateOptions> {
    if o.is_null() {
        return Ok(GenerateOptions::default());
    }
    let class = env.get_object_class(o)?;
    let obj = (o, &class);
    let int = |env: &mut JNIEnv<'_>, name: &str| -> JniResult<usize> {
        let v = field(env, obj, name, "I", INT)?.i()?;
        usize::try_from(v).map_err(|_| CapiError::invalid(format!("{name} is negative")).into())
    };
    let float = |env: &mut JNIEnv<'_>, name: &str| field(env, obj, name, "F", FLOAT)?.f();
    let max_tokens = int(env, "maxTokens")?;
    if max_tokens == 0 {
        return Err(CapiError::invalid("maxTokens must be at least 1").into());
    }
    let sampling = SamplingParams {
        temperature: float(env, "temperature")?,
        top_k: int(env, "topK")?,
        top_p: float(env, "topP")?,
        min_p: float(env, "minP")?,
        repeat_penalty: float(env, "repeatPenalty")?,
        repeat_last_n: int(env, "repeatLastN")?,
        seed: field(env, obj, "seed", "J", LONG)?.j()? as u64,
    };
    let stops = field(
        env,
        obj,
        "stopStrings",
        "[Ljava/lang/String;",
        ReturnType::Array,
    )?;
    let stops = JObjectArray::from(stops.l()?);
    let mut stop_strings = Vec::new();
    if !stops.is_null() {
        for i in 0..env.get_array_length(&stops)? {
            let s = JString::from(env.get_object_array_element(&stops, i)?);
            stop_strings.push(string(env, &s, "a stop string")?);
            env.delete_local_ref(s)?;
        }
    }
    Ok(GenerateOptions {
        max_tokens,
        sampling,
        stop_strings,
        ignore_eos: field(env, obj, "ignoreEos", "Z", BOOLEAN)?.z()?,
    })
}

/// Generates, calling `listener.onToken(piece, token)` for every piece; returns the result as
/// the `double[]` that `AlcEngine.Result` is built from.
fn generate(
    env: &mut JNIEnv<'_>,
    handle: jlong,
    prompt: Prompt<'_>,
    opts: &JObject<'_>,
    listener: &JObject<'_>,
) -> JniResult<jdoubleArray> {
    let session = session(handle)?;
    let options = options(env, opts)?;
    let on_token = if listener.is_null() {
        None
    } else {
        let class = env.get_object_class(listener)?;
        Some(env.get_method_id(&class, "onToken", "(Ljava/lang/String;I)Z")?)
    };
    let mut listener_error = None;
    let outcome = session.run(prompt, &options, &mut |piece| {
        let Some(on_token) = on_token else {
            return true;
        };
        let call = |env: &mut JNIEnv<'_>| -> jni::errors::Result<bool> {
            let text = env.new_string(piece.text)?;
            let args = [
                JValue::Object(&text).as_jni(),
                JValue::Int(piece.token as jint).as_jni(),
            ];
            // SAFETY: `onToken` takes (String, int) and returns boolean, as called here.
            let go_on =
                unsafe { env.call_method_unchecked(listener, on_token, BOOLEAN, &args) }?.z()?;
            // One local reference per token would overflow Android's table on long answers.
            env.delete_local_ref(text)?;
            Ok(go_on)
        };
        call(env).unwrap_or_else(|e| {
            listener_error = Some(e);
            false
        })
    });
    if let Some(e) = listener_error {
        return Err(e.into());
    }
    let r = outcome?;
    let values = result_values(&r);
    let array = env.new_double_array(values.len() as jint)?;
    env.set_double_array_region(&array, 0, &values)?;
    Ok(array.into_raw())
}

/// The layout `AlcEngine.Result` reads: keep the two in step.
fn result_values(r: &AvaGenerateResult) -> [f64; 9] {
    let t = &r.timings;
    [
        r.stop_reason as i32 as f64,
        r.n_tokens as f64,
        r.position as f64,
        r.context as f64,
        t.prefill_tokens as f64,
        t.decode_tokens as f64,
        t.prefill_ms,
        t.decode_ms,
        t.time_to_first_token_ms,
    ]
}

/// The thread count of a Java `open` (0: the process's threads).
fn thread_count(threads: jint) -> JniResult<usize> {
    Ok(usize::try_from(threads).map_err(|_| CapiError::invalid("thread count is negative"))?)
}

/// The native-code policy of a Java `open`: trusted keys (key lines or hex) and the opt-in.
fn policy(
    env: &mut JNIEnv<'_>,
    keys: &JObjectArray<'_>,
    allow_unsigned: jboolean,
) -> JniResult<KernelPolicy> {
    let mut trusted = Vec::new();
    if !keys.is_null() {
        for i in 0..env.get_array_length(keys)? {
            let key = JString::from(env.get_object_array_element(keys, i)?);
            let text = string(env, &key, "trusted key")?;
            trusted.push(super::trust::parse_key(&text)?);
        }
    }
    Ok(KernelPolicy {
        trusted,
        allow_unsigned: allow_unsigned != 0,
    })
}

/// `static native long nativeOpen(String path, int context, String[] trustedKeys,
/// boolean allowUnsignedKernels, int threads, int kvCache)`; `kvCache` is an `AvaKvCache`
/// value.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeOpen<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    path: JString<'l>,
    context: jint,
    trusted_keys: JObjectArray<'l>,
    allow_unsigned: jboolean,
    threads: jint,
    kv_cache: jint,
) -> jlong {
    run(&mut env, |env| {
        let path = string(env, &path, "path")?;
        let kv = u32::try_from(kv_cache)
            .ok()
            .and_then(super::AvaKvCache::dtype)
            .ok_or_else(|| CapiError::invalid(format!("kvCache {kv_cache} is not a KvCache")))?;
        let context = usize::try_from(context)
            .map_err(|_| CapiError::invalid("context length is negative"))?;
        let threads = thread_count(threads)?;
        let policy = policy(env, &trusted_keys, allow_unsigned)?;
        let engine = super::trust::engine_with(Path::new(&path), &policy, threads)?;
        let session = Box::new(AvaSession::new(engine, context, kv));
        Ok(Box::into_raw(session) as jlong)
    })
    .unwrap_or(0)
}

/// `static native void nativeFree(long handle)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeFree<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, |_| {
        if handle != 0 {
            // SAFETY: a handle from `nativeOpen`, freed once by the Java class.
            drop(unsafe { Box::from_raw(handle as *mut AvaSession) });
        }
        Ok(())
    })
    .unwrap_or_default()
}

/// `static native void nativeCancel(long handle)`: may run while `nativeGenerate` runs.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeCancel<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, |_| {
        session(handle)?.cancel();
        Ok(())
    })
    .unwrap_or_default()
}

/// `static native void nativeReset(long handle)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeReset<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, |_| Ok(session(handle)?.reset()?)).unwrap_or_default()
}

/// `static native int[] nativeTokenize(long handle, String text, boolean addSpecial)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeTokenize<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    text: JString<'l>,
    add_special: jboolean,
) -> jintArray {
    run(&mut env, |env| {
        let text = string(env, &text, "text")?;
        let ids = session(handle)?
            .engine()
            .tokenizer()
            .encode(&text, add_special != 0)?;
        let ids: Vec<jint> = ids.into_iter().map(|x| x as jint).collect();
        let array = env.new_int_array(ids.len() as jint)?;
        env.set_int_array_region(&array, 0, &ids)?;
        Ok(array.into_raw())
    })
    .unwrap_or(std::ptr::null_mut())
}

/// `static native String nativeDetokenize(long handle, int[] ids)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeDetokenize<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    ids: JIntArray<'l>,
) -> jstring {
    run(&mut env, |env| {
        let ids = int_array(env, &ids, "ids")?;
        let text = session(handle)?.engine().tokenizer().decode(&ids)?;
        Ok(env.new_string(text)?.into_raw())
    })
    .unwrap_or(std::ptr::null_mut())
}

/// `static native double[] nativeGenerate(long handle, int[] prompt, Options options,
/// TokenListener listener)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeGenerate<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    prompt: JIntArray<'l>,
    options: JObject<'l>,
    listener: JObject<'l>,
) -> jdoubleArray {
    run(&mut env, |env| {
        let ids = int_array(env, &prompt, "prompt")?;
        generate(env, handle, Prompt::Tokens(&ids), &options, &listener)
    })
    .unwrap_or(std::ptr::null_mut())
}

/// `static native double[] nativeChat(long handle, String text, Options options,
/// TokenListener listener)`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AlcEngine_nativeChat<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    text: JString<'l>,
    options: JObject<'l>,
    listener: JObject<'l>,
) -> jdoubleArray {
    run(&mut env, |env| {
        let text = string(env, &text, "text")?;
        generate(env, handle, Prompt::Chat(&text), &options, &listener)
    })
    .unwrap_or(std::ptr::null_mut())
}

/// The classifier behind a handle from `AonClassifier.nativeOpen`.
fn classifier<'a>(handle: jlong) -> JniResult<&'a AvaClassifier> {
    // SAFETY: the Java class passes only handles from `nativeOpen` that it has not freed, and
    // frees one only when no native call on it runs.
    unsafe { (handle as *const AvaClassifier).as_ref() }
        .ok_or_else(|| CapiError::invalid("the classifier is closed").into())
}

/// `static native long nativeOpen(String path, String[] trustedKeys, boolean
/// allowUnsignedKernels, int threads)` of `AonClassifier`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AonClassifier_nativeOpen<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    path: JString<'l>,
    trusted_keys: JObjectArray<'l>,
    allow_unsigned: jboolean,
    threads: jint,
) -> jlong {
    run(&mut env, |env| {
        let path = string(env, &path, "path")?;
        let threads = thread_count(threads)?;
        let policy = policy(env, &trusted_keys, allow_unsigned)?;
        let classifier = Box::new(AvaClassifier::open_with_threads(
            Path::new(&path),
            &policy,
            threads,
        )?);
        Ok(Box::into_raw(classifier) as jlong)
    })
    .unwrap_or(0)
}

/// `static native void nativeFree(long handle)` of `AonClassifier`.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AonClassifier_nativeFree<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    run(&mut env, |_| {
        if handle != 0 {
            // SAFETY: a handle from `nativeOpen`, freed once by the Java class.
            drop(unsafe { Box::from_raw(handle as *mut AvaClassifier) });
        }
        Ok(())
    })
    .unwrap_or_default()
}

/// `static native float nativeThreshold(long handle)`: the out-of-scope threshold (0: none).
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AonClassifier_nativeThreshold<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) -> jfloat {
    run(&mut env, |_| Ok(classifier(handle)?.threshold())).unwrap_or_default()
}

/// `static native String[] nativeLabels(long handle)`: label names by class index.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AonClassifier_nativeLabels<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) -> jobjectArray {
    run(&mut env, |env| {
        let labels = classifier(handle)?.labels();
        let array =
            env.new_object_array(labels.len() as jint, "java/lang/String", JObject::null())?;
        for (i, label) in labels.iter().enumerate() {
            let s = env.new_string(label)?;
            env.set_object_array_element(&array, i as jint, &s)?;
            env.delete_local_ref(s)?;
        }
        Ok(array.into_raw())
    })
    .unwrap_or(std::ptr::null_mut())
}

/// `static native double[] nativeClassify(long handle, String text, int topK)`: may run on
/// several threads at once. Returns `[tokens, latency ms, best index, best score, 1 if out of
/// scope else 0, then index and score of each of the top K]`, the layout
/// `AonClassifier.Result` reads.
#[no_mangle]
pub extern "system" fn Java_com_ava_runtime_AonClassifier_nativeClassify<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    text: JString<'l>,
    top_k: jint,
) -> jdoubleArray {
    run(&mut env, |env| {
        let text = string(env, &text, "text")?;
        let top_k = usize::try_from(top_k).map_err(|_| CapiError::invalid("topK is negative"))?;
        let r = classifier(handle)?.rank(&text, top_k)?;
        let (best, score) = r.top[0];
        let mut values = vec![
            r.n_tokens as f64,
            r.latency_ms,
            best as f64,
            f64::from(score),
            f64::from(u8::from(r.out_of_scope)),
        ];
        for &(i, p) in r.top.iter().take(top_k) {
            values.extend([i as f64, f64::from(p)]);
        }
        let array = env.new_double_array(values.len() as jint)?;
        env.set_double_array_region(&array, 0, &values)?;
        Ok(array.into_raw())
    })
    .unwrap_or(std::ptr::null_mut())
}
