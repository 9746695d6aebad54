//! mALBERT intent classification behind the C ABI: a classifier opened once from an archive
//! and shared by any threads, returning the best intent, its score and the top K, with the
//! archive's out-of-scope threshold applied as `aon classify` applies it.

use std::ffi::{c_char, CString};
use std::path::Path;
use std::time::Instant;

use super::c_string;
use super::error::{c_str, guard, guard_void, handle, out_ptr, CapiError, CapiResult};
use super::AvaStatus;
use crate::albert::{Classifier, OOS_LABEL};

/// An mALBERT intent classifier. Immutable once open: share it between threads freely.
pub struct AvaClassifier {
    classifier: Classifier,
    /// Label names by class index, as C strings (`ava_classifier_label` lends them out).
    labels: Vec<CString>,
}

// Classification runs on shared references from any thread.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<AvaClassifier>();
};

/// One intent and its probability.
#[repr(C)]
#[derive(Debug)]
pub struct AvaIntent {
    /// The intent's label: NUL-terminated UTF-8 owned by the `AvaClassification`.
    pub label: *mut c_char,
    /// Its softmax probability (0 to 1).
    pub score: f32,
    /// Its class index (see `ava_classifier_label`).
    pub index: u32,
}

/// What `ava_classify` returns: free it with `ava_classification_free`.
#[repr(C)]
#[derive(Debug)]
pub struct AvaClassification {
    /// The most likely intent's label, or "oos" when `out_of_scope` (NUL-terminated UTF-8,
    /// owned by this struct).
    pub intent: *mut c_char,
    /// The most likely intent's softmax probability.
    pub score: f32,
    /// The most likely intent's class index (also when `out_of_scope`).
    pub index: u32,
    /// `score` is below the archive's out-of-scope threshold (`aon compile --oos-threshold`,
    /// see `ava_classifier_threshold`): the utterance matches none of the intents well enough.
    pub out_of_scope: bool,
    /// The `n_top` most likely intents, best first (the first is the best intent, also when
    /// out of scope); NULL when `n_top` is 0.
    pub top: *mut AvaIntent,
    /// How many: the `top_k` asked for, at most the number of labels.
    pub n_top: usize,
    /// Tokens the utterance became, `[CLS]` and `[SEP]` included (after truncation).
    pub n_tokens: u32,
    /// Milliseconds spent tokenizing and running the encoder.
    pub latency_ms: f64,
}

impl AvaClassification {
    const EMPTY: AvaClassification = AvaClassification {
        intent: std::ptr::null_mut(),
        score: 0.0,
        index: 0,
        out_of_scope: false,
        top: std::ptr::null_mut(),
        n_top: 0,
        n_tokens: 0,
        latency_ms: 0.0,
    };
}

/// One utterance ranked: the `top` best classes (index, probability), best first, at least
/// the best one.
pub(crate) struct Ranking {
    pub top: Vec<(usize, f32)>,
    pub out_of_scope: bool,
    pub n_tokens: usize,
    pub latency_ms: f64,
}

impl AvaClassifier {
    /// Opens an archive (`.tar`, verified, or unpacked) of an mALBERT classifier.
    pub(crate) fn open(path: &Path) -> CapiResult<Self> {
        Self::open_with_threads(path, &crate::policy::KernelPolicy::default(), 0)
    }

    /// [`AvaClassifier::open`], loading a kernel library only when `policy` allows it, on
    /// `n_threads` threads of its own (0: the process's pools).
    pub(crate) fn open_with_threads(
        path: &Path,
        policy: &crate::policy::KernelPolicy,
        n_threads: usize,
    ) -> CapiResult<Self> {
        let threads = crate::threads::Threads::new(n_threads)?;
        let classifier = Classifier::open_with_policy(path, crate::tvm::Backend::Auto, policy)?
            .with_threads(threads);
        let labels = classifier.labels().iter().map(|l| c_string(l)).collect();
        Ok(AvaClassifier { classifier, labels })
    }

    /// Label names by class index.
    #[cfg(feature = "jni")]
    pub(crate) fn labels(&self) -> &[String] {
        self.classifier.labels()
    }

    /// The archive's out-of-scope threshold; 0 when it has none (nothing scores below 0).
    pub(crate) fn threshold(&self) -> f32 {
        self.classifier.oos_threshold().unwrap_or(0.0)
    }

    /// The `top_k` most likely classes of `text` (at least one, at most every class), ordered
    /// as `aon classify` orders them: by probability, ties by class index.
    pub(crate) fn rank(&self, text: &str, top_k: usize) -> CapiResult<Ranking> {
        let start = Instant::now();
        let c = self.classifier.classify(text)?;
        let mut order: Vec<usize> = (0..c.probs.len()).collect();
        order.sort_by(|&a, &b| c.probs[b].total_cmp(&c.probs[a]));
        order.truncate(top_k.max(1));
        if order.is_empty() {
            return Err(CapiError::new(AvaStatus::Model, "the model has no classes"));
        }
        let best = c.probs[order[0]];
        Ok(Ranking {
            top: order.into_iter().map(|i| (i, c.probs[i])).collect(),
            out_of_scope: best < self.threshold(),
            n_tokens: c.input_ids.len(),
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn label(&self, index: usize) -> CString {
        self.labels.get(index).cloned().unwrap_or_default()
    }
}

/// Opens an mALBERT intent classifier: an archive `.tar` from `aon compile` (mapped, every
/// sha256 verified) or an unpacked one, and writes it to `*out`. Another model family (a
/// Gemma archive) fails with `AVA_STATUS_MODEL`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_open(
    path: *const c_char,
    out: *mut *mut AvaClassifier,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        *out = Box::into_raw(Box::new(AvaClassifier::open(Path::new(path))?));
        Ok(())
    })
}

/// Frees a classifier (NULL is ignored). No call on it may be running. Classifications it
/// returned stay valid.
///
/// # Safety
/// `classifier` is NULL or was returned by `ava_classifier_open` and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_free(classifier: *mut AvaClassifier) {
    guard_void(|| {
        if !classifier.is_null() {
            // SAFETY: returned by `ava_classifier_open` (Box::into_raw), freed once.
            drop(unsafe { Box::from_raw(classifier) });
        }
    })
}

/// Writes the number of intents the classifier knows to `*out`.
///
/// # Safety
/// `classifier` is a live classifier; `out` points to a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_num_labels(
    classifier: *const AvaClassifier,
    out: *mut usize,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (c, out) = unsafe { (handle(classifier, "classifier")?, out_ptr(out, "out")?) };
        *out = c.labels.len();
        Ok(())
    })
}

/// Writes the label of class `index` to `*out`: a string owned by the classifier, valid until
/// `ava_classifier_free` (do not free it).
///
/// # Safety
/// `classifier` is a live classifier; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_label(
    classifier: *const AvaClassifier,
    index: usize,
    out: *mut *const c_char,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null();
        // SAFETY: per this function's contract.
        let c = unsafe { handle(classifier, "classifier") }?;
        let label = c.labels.get(index).ok_or_else(|| {
            CapiError::invalid(format!(
                "label index {index} out of range ({} labels)",
                c.labels.len()
            ))
        })?;
        *out = label.as_ptr();
        Ok(())
    })
}

/// Writes the archive's out-of-scope threshold to `*out`: a best score below it makes an
/// utterance out of scope. 0 when the archive has none (every utterance is in scope).
///
/// # Safety
/// `classifier` is a live classifier; `out` points to a `float`.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_threshold(
    classifier: *const AvaClassifier,
    out: *mut f32,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (c, out) = unsafe { (handle(classifier, "classifier")?, out_ptr(out, "out")?) };
        *out = c.threshold();
        Ok(())
    })
}

/// Classifies the utterance `text`: the best intent, its probability, whether it is out of
/// scope, and the `top_k` most likely intents best first (0 gives none; more than there are
/// gives all), written to `*out`, which the caller frees with `ava_classification_free`. Any
/// threads may classify with one classifier at the same time.
///
/// # Safety
/// `classifier` is a live classifier; `text` is NUL-terminated; `out` points to an
/// `AvaClassification`.
#[no_mangle]
pub unsafe extern "C" fn ava_classify(
    classifier: *const AvaClassifier,
    text: *const c_char,
    top_k: u32,
    out: *mut AvaClassification,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = AvaClassification::EMPTY;
        // SAFETY: per this function's contract.
        let c = unsafe { handle(classifier, "classifier") }?;
        // SAFETY: per this function's contract.
        let text = unsafe { c_str(text, "text") }?;
        let r = c.rank(text, top_k as usize)?;
        let (best, score) = r.top[0];
        let n_top = r.top.len().min(top_k as usize);
        let top: Box<[AvaIntent]> = r.top[..n_top]
            .iter()
            .map(|&(i, p)| AvaIntent {
                label: c.label(i).into_raw(),
                score: p,
                index: i as u32,
            })
            .collect();
        let intent = if r.out_of_scope {
            c_string(OOS_LABEL)
        } else {
            c.label(best)
        };
        *out = AvaClassification {
            intent: intent.into_raw(),
            score,
            index: best as u32,
            out_of_scope: r.out_of_scope,
            top: if top.is_empty() {
                std::ptr::null_mut()
            } else {
                Box::into_raw(top).cast::<AvaIntent>()
            },
            n_top,
            n_tokens: u32::try_from(r.n_tokens).unwrap_or(u32::MAX),
            latency_ms: r.latency_ms,
        };
        Ok(())
    })
}

/// Frees what an `AvaClassification` from `ava_classify` owns and zeroes it (NULL, and a
/// zeroed or already freed one, are ignored).
///
/// # Safety
/// `classification` is NULL or was filled by `ava_classify` (or zeroed).
#[no_mangle]
pub unsafe extern "C" fn ava_classification_free(classification: *mut AvaClassification) {
    guard_void(|| {
        // SAFETY: per this function's contract.
        let Some(c) = (unsafe { classification.as_mut() }) else {
            return;
        };
        if !c.top.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(c.top, c.n_top);
            // SAFETY: made by `Box::into_raw` of a boxed slice of `n_top` intents.
            let top = unsafe { Box::from_raw(slice) };
            for intent in top.iter() {
                // SAFETY: each label was made by `CString::into_raw`, freed once here.
                unsafe { free_string(intent.label) };
            }
        }
        // SAFETY: made by `CString::into_raw` (or NULL), freed once here.
        unsafe { free_string(c.intent) };
        *c = AvaClassification::EMPTY;
    })
}

/// # Safety
/// `s` is NULL or came from `CString::into_raw` and is not used again.
unsafe fn free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: per this function's contract.
        drop(unsafe { CString::from_raw(s) });
    }
}
