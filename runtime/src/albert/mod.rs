//! mALBERT intent classifiers (the output of `aon compile`/`aon export`/`aon quantize`): loads
//! an archive, an archive directory, a model directory or a bare `.onnx` file with
//! `tokenizer.json` and `labels.json` beside it, and classifies utterances with the hand-written
//! encoder of [`encoder`] (int8 weights where the graph has them, f32 activations), one forward
//! pass over the operations of the native or the TVM backend (`ops`, as `crate::gemma3::Kernels`
//! is for Gemma 3).

pub mod encoder;
pub mod graph;
pub mod kernels;
mod ops;
use ava_core::onnx_proto as proto;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::package::Package;
use crate::policy::KernelPolicy;
use crate::threads::Threads;
use crate::tokenizer::Tokenizer;
use crate::tvm::Backend;

pub use encoder::Encoder;
pub use kernels::EncoderKernels;

pub use ava_core::checkpoint::{
    INT8_ONNX_MODEL_FILE, LABELS_FILE, ONNX_MODEL_FILE, TOKENIZER_FILE,
};
/// Model entries looked for, INT8 first.
pub const MODEL_FILES: [&str; 2] = [INT8_ONNX_MODEL_FILE, ONNX_MODEL_FILE];
/// The `family` of classifier archives' manifests.
pub const FAMILY: &str = "albert";
/// The manifest stage holding the out-of-scope threshold (`stages.oos.threshold`, written by
/// `aon compile --oos-threshold`, docs/formats/package-v1.md).
pub const OOS_STAGE: &str = "oos";
/// The intent name given to utterances scored below the out-of-scope threshold.
pub const OOS_LABEL: &str = "oos";

/// A loaded classifier.
pub struct Classifier {
    encoder: Encoder,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    model: PathBuf,
    oos_threshold: Option<f32>,
    kernel_note: Option<String>,
    threads: Threads,
}

/// One utterance's result.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Token ids fed to the encoder.
    pub input_ids: Vec<u32>,
    /// The classifier's logits by class index.
    pub logits: Vec<f32>,
    /// Softmax probabilities by class index.
    pub probs: Vec<f32>,
    /// The best class.
    pub index: usize,
    /// Seconds spent tokenizing and running.
    pub seconds: f64,
    /// Seconds spent in the encoder alone.
    pub model_seconds: f64,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Classifier {
    /// Opens an archive (`.tar` or unpacked, verified), a model directory, or an `.onnx` file,
    /// on the archive's TVM kernels for this machine when it has them ([`Backend::Auto`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Backend::Auto)
    }

    /// [`Classifier::open`] on the given backend: `Tvm` fails unless `path` is an archive with
    /// a kernel library for this machine (`aon compile --target`). No kernel library is loaded
    /// under the default policy (see [`Classifier::open_with_policy`]).
    pub fn open_with(path: &Path, backend: Backend) -> Result<Self> {
        Self::open_with_policy(path, backend, &KernelPolicy::default())
    }

    /// [`Classifier::open_with`], loading an archive's kernel library only when `policy`
    /// allows it (docs/security.md). `Auto` then falls back to native and says why in
    /// [`Classifier::kernel_note`]; `Tvm` fails with the reason.
    pub fn open_with_policy(path: &Path, backend: Backend, policy: &KernelPolicy) -> Result<Self> {
        let is_archive_dir = path.is_dir() && path.join(ava_packaging::MANIFEST_NAME).is_file();
        if path.is_file() && path.extension().is_some_and(|e| e == "onnx") {
            let dir = path.parent().unwrap_or(Path::new("."));
            no_library(path, backend)?;
            return Self::from_parts(
                &read(path)?,
                &read(&dir.join(TOKENIZER_FILE))?,
                &read(&dir.join(LABELS_FILE))?,
                path,
            );
        }
        if path.is_dir() && !is_archive_dir {
            let model = MODEL_FILES
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::MissingFile {
                    path: path.join(MODEL_FILES[1]),
                })?;
            return Self::open_with_policy(&model, backend, policy);
        }
        let pkg = Package::open_with_policy(path, policy)?;
        let entry = |name: &str| {
            pkg.entry(name).ok_or_else(|| Error::MissingFile {
                path: path.join(name),
            })
        };
        let Some(model) = MODEL_FILES.iter().find(|f| pkg.entry(f).is_some()).copied() else {
            let family = &pkg.manifest().family;
            if family == FAMILY {
                return Err(Error::MissingFile {
                    path: path.join(MODEL_FILES[1]),
                });
            }
            return Err(Error::Model(format!(
                "{}: a {family} archive, not an mALBERT intent classifier (no {} or {})",
                path.display(),
                MODEL_FILES[0],
                MODEL_FILES[1]
            )));
        };
        let mut c = Self::from_parts(
            entry(model)?,
            entry(TOKENIZER_FILE)?,
            entry(LABELS_FILE)?,
            &path.join(model),
        )?;
        c.oos_threshold = pkg
            .manifest()
            .stages
            .get(OOS_STAGE)
            .and_then(|s| s.get("threshold"))
            .and_then(serde_json::Value::as_f64)
            .map(|t| t as f32);
        match EncoderKernels::load(&pkg, path, backend)? {
            Some(kernels) => c.encoder.use_kernels(kernels)?,
            None if backend == Backend::Auto => c.kernel_note = kernels::refused_note(&pkg),
            None => {}
        }
        Ok(c)
    }

    /// Builds a classifier from the bytes of its three files; `model` names it in messages.
    pub fn from_parts(onnx: &[u8], tokenizer: &[u8], labels: &[u8], model: &Path) -> Result<Self> {
        let g = graph::OnnxGraph::parse(onnx)?;
        let encoder = Encoder::from_graph(&g)
            .map_err(|e| Error::Model(format!("{}: {e}", model.display())))?;
        let tokenizer = Tokenizer::from_bytes(tokenizer, &model.with_file_name(TOKENIZER_FILE))?;
        let labels: Vec<String> = serde_json::from_slice(labels)
            .map_err(|e| Error::Model(format!("{LABELS_FILE}: {e}")))?;
        if labels.len() != encoder.num_labels() {
            return Err(Error::Model(format!(
                "{LABELS_FILE}: {} labels for {} classes",
                labels.len(),
                encoder.num_labels()
            )));
        }
        Ok(Classifier {
            encoder,
            tokenizer,
            labels,
            model: model.to_path_buf(),
            oos_threshold: None,
            kernel_note: None,
            threads: Threads::default(),
        })
    }

    /// Label names by class index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The model file or entry it runs.
    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// The out-of-scope threshold of an archive (`stages.oos.threshold` of its manifest):
    /// an utterance whose best softmax score is below it is out of scope. `None` for model
    /// directories, `.onnx` files and archives compiled without one.
    pub fn oos_threshold(&self) -> Option<f32> {
        self.oos_threshold
    }

    /// Why the archive's kernel library for this machine was not loaded, when the policy
    /// refused it (the classifier then runs on the native backend).
    pub fn kernel_note(&self) -> Option<&str> {
        self.kernel_note.as_deref()
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Runs this classifier's encoder on `threads` (by default the process's pools).
    pub fn with_threads(mut self, threads: Threads) -> Self {
        self.threads = threads;
        self
    }

    /// The threads the encoder runs on.
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, truncated as `tokenizer.json` says.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }

    /// Classifies one utterance.
    pub fn classify(&self, text: &str) -> Result<Classification> {
        let t0 = Instant::now();
        let input_ids = self.encode(text)?;
        let t1 = Instant::now();
        let logits = self.threads.run(|| self.encoder.logits(&input_ids))?;
        let model_seconds = t1.elapsed().as_secs_f64();
        let probs = softmax(&logits);
        let index = (0..probs.len())
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        Ok(Classification {
            input_ids,
            logits,
            probs,
            index,
            seconds: t0.elapsed().as_secs_f64(),
            model_seconds,
        })
    }
}

/// Model files and directories carry no kernel library: only the native backend runs them.
fn no_library(path: &Path, backend: Backend) -> Result<()> {
    if backend == Backend::Tvm {
        return Err(Error::Model(format!(
            "tvm: {} is not an archive; kernel libraries come with archives compiled by `aon compile --target`",
            path.display()
        )));
    }
    Ok(())
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}
