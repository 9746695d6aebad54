//! The report `ava-runner` prints as the last line of its stdout and `alc validate` /
//! `aon validate` read (docs/validate.md). Both sides use these types.
//!
//! serde_json writes a non-finite float as `null`; readers take `null` back as NaN, so a NaN
//! logit stays the worst difference instead of making the report unreadable.

use serde::{Deserialize, Deserializer, Serialize};

/// Version of the report's layout; readers refuse other versions.
pub const REPORT_VERSION: u32 = 1;

/// What every report line has: whether the run succeeded, its version and, on failure, why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The run succeeded.
    #[serde(default)]
    pub ok: bool,
    /// [`REPORT_VERSION`] (absent in a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_version: Option<u32>,
    /// Why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Status {
    /// The report of a failed run.
    pub fn failure(error: String) -> Self {
        Status {
            ok: false,
            report_version: None,
            error: Some(error),
        }
    }
}

/// `ava-runner --facts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactsReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The device.
    pub device: DeviceFacts,
}

/// What the device says about itself; a field is `None` where it cannot be read. The fields
/// are in alphabetical order: `validate` passes them into its own report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFacts {
    /// Android's version (`ro.build.version.release`).
    pub android_version: Option<String>,
    /// CPU architecture (`aarch64`, `x86_64`).
    pub arch: String,
    /// The CPU's feature flags (`/proc/cpuinfo`).
    pub cpu_features: Vec<String>,
    /// Logical CPUs available.
    pub cpus: Option<usize>,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_available_bytes: Option<u64>,
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub mem_total_bytes: Option<u64>,
    /// The product model (`ro.product.model`).
    pub model: Option<String>,
    /// Operating system (`linux`, `android`).
    pub os: String,
}

/// `ava-runner ARCHIVE --prompts FILE`: a Gemma 3 archive's greedy tokens and timings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// Always `true` (a failure is a [`Status`]).
    pub ok: bool,
    /// The backend that ran (`native`, `tvm`).
    pub backend: String,
    /// Milliseconds to open the archive.
    #[serde(deserialize_with = "f64_or_nan")]
    pub load_ms: f64,
    /// Bytes of the KV cache at the run's context.
    pub kv_cache_bytes: u64,
    /// Threads the kernels ran on (`--threads`, else one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// One run per prompt, in order.
    pub prompts: Vec<PromptRun>,
    /// Peak resident set (`VmHWM`), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The device.
    pub device: DeviceFacts,
}

/// Per step, the highest `(id, logit)` pairs.
pub type TopLogits = Vec<Vec<(u32, f32)>>;

/// One prompt of a [`GenerateReport`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptRun {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// The generated tokens; teacher-forced (`--force`), the device's argmax at each step.
    pub tokens: Vec<u32>,
    /// Teacher-forced only: the `--top` highest `(id, logit)` of each step.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "top_or_nan"
    )]
    pub top: Option<TopLogits>,
    /// Why generation stopped (`StopReason::name`).
    pub stop_reason: String,
    /// Milliseconds to the first token.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ttft_ms: f64,
    /// Prompt tokens per second.
    #[serde(deserialize_with = "f64_or_nan")]
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    #[serde(deserialize_with = "f64_or_nan")]
    pub decode_tok_s: f64,
}

/// `ava-runner ARCHIVE --classify FILE`: a classifier archive's predictions and timings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifyReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// Always `true` (a failure is a [`Status`]).
    pub ok: bool,
    /// Always [`CLASSIFY_MODE`].
    pub mode: String,
    /// The backend that ran (`native`, `tvm`).
    pub backend: String,
    /// Milliseconds to open the archive.
    #[serde(deserialize_with = "f64_or_nan")]
    pub load_ms: f64,
    /// Number of labels.
    pub labels: usize,
    /// Longest input the encoder takes.
    pub max_seq_len: usize,
    /// Threads the kernels ran on (`--threads`, else one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// One prediction per utterance, in order.
    pub utterances: Vec<Classified>,
    /// Peak resident set (`VmHWM`), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The device.
    pub device: DeviceFacts,
}

/// The `mode` of a [`ClassifyReport`].
pub const CLASSIFY_MODE: &str = "classify";

/// One utterance of a [`ClassifyReport`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Classified {
    /// Token ids fed to the encoder.
    pub tokens: Vec<u32>,
    /// The predicted class.
    pub index: usize,
    /// Its softmax probability.
    #[serde(deserialize_with = "f32_or_nan")]
    pub score: f32,
    /// Every class's logit.
    #[serde(deserialize_with = "f32s_or_nan")]
    pub logits: Vec<f32>,
    /// Milliseconds for the utterance, tokenization included.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ms: f64,
    /// Milliseconds in the model.
    #[serde(deserialize_with = "f64_or_nan")]
    pub model_ms: f64,
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn f32_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

fn f32s_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let v = Vec::<Option<f32>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
}

type TopIn = Option<Vec<Vec<(u32, Option<f32>)>>>;

fn top_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TopLogits>, D::Error> {
    Ok(TopIn::deserialize(d)?.map(|steps| {
        steps
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .map(|(id, x)| (id, x.unwrap_or(f32::NAN)))
                    .collect()
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_floats_come_back_as_nan() {
        let run = PromptRun {
            prompt_tokens: 2,
            tokens: vec![3, 4],
            top: Some(vec![vec![(3, 1.5), (4, f32::NAN)], vec![(4, 2.0)]]),
            stop_reason: "max_tokens".into(),
            ttft_ms: 1.0,
            prefill_tok_s: f64::INFINITY,
            decode_tok_s: 5.0,
        };
        let text = serde_json::to_string(&run).unwrap();
        assert!(text.contains("[4,null]"), "{text}");
        let back: PromptRun = serde_json::from_str(&text).unwrap();
        let top = back.top.unwrap();
        assert!(top[0][1].1.is_nan() && back.prefill_tok_s.is_nan());
        assert_eq!((top[1][0], back.tokens), ((4, 2.0), vec![3, 4]));
        let plain = PromptRun {
            top: None,
            ..PromptRun::default()
        };
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("\"top\""), "{text}");
        assert_eq!(serde_json::from_str::<PromptRun>(&text).unwrap(), plain);
    }

    #[test]
    fn a_failure_reads_as_a_status() {
        let text = serde_json::to_string(&Status::failure("no archive".into())).unwrap();
        let s: Status = serde_json::from_str(&text).unwrap();
        assert_eq!((s.ok, s.error.as_deref()), (false, Some("no archive")));
        let s: Status =
            serde_json::from_str(r#"{"ok": true, "report_version": 1, "prompts": []}"#).unwrap();
        assert_eq!((s.ok, s.report_version), (true, Some(REPORT_VERSION)));
    }
}
