//! The runtime memory estimate as the commands use it: computed from a built stage directory
//! (`alc compile`), recorded in the manifest under `stages.memory` with the budget it was
//! checked against, shown by `alc inspect` and compared with the measured peak RSS by
//! `alc validate`. The arithmetic lives in `ava_core::footprint`.

use std::path::Path;

use anyhow::{bail, Context};
use ava_core::footprint::{estimate, Footprint, FootprintInputs, KvDtype, DEFAULT_PREFILL_TOKENS};
use ava_core::{Checkpoint, FileRole, Target};
use ava_packaging::Manifest;
use serde::{Deserialize, Serialize};

use crate::ui::human_bytes;

/// Key of the estimate in the manifest's `stages`.
pub const MEMORY_STAGE: &str = "memory";
/// Bytes in a MiB (the unit of `--memory-budget`).
pub const MIB: u64 = 1 << 20;

/// `stages.memory` of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// The estimate.
    #[serde(flatten)]
    pub footprint: Footprint,
    /// The budget it was checked against (`--memory-budget`), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<u64>,
}

impl MemoryRecord {
    /// The record of `manifest`, if it has a valid one.
    pub fn from_manifest(manifest: &Manifest) -> Option<MemoryRecord> {
        let value = manifest.stages.get(MEMORY_STAGE)?;
        serde_json::from_value(value.clone()).ok()
    }

    /// One line: total, its parts, and the budget.
    pub fn describe(&self) -> String {
        let f = &self.footprint;
        let mut s = format!(
            "{} at context {} (weights {}, kernels {}, KV cache {} {}, workspace {})",
            human_bytes(f.total_bytes),
            f.context,
            human_bytes(f.weights_bytes),
            human_bytes(f.library_bytes),
            f.kv_dtype.name(),
            human_bytes(f.kv_cache_bytes),
            human_bytes(f.workspace_bytes),
        );
        if let Some(b) = self.budget_bytes {
            s += &format!(", budget {}", human_bytes(b));
        }
        s
    }

    /// Fails when the estimate exceeds the budget.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.budget_bytes {
            Some(budget) if self.footprint.total_bytes > budget => bail!(
                "estimated runtime memory {} exceeds --memory-budget {} MiB: {}",
                human_bytes(self.footprint.total_bytes),
                budget / MIB,
                self.describe()
            ),
            _ => Ok(()),
        }
    }
}

/// The estimate for a built stage directory (`checkpoint/` of `alc build`) on `target`.
/// Without an explicit `context`, the runtime's default context capped at the model's positions.
pub fn for_built_dir(
    dir: &Path,
    target: Target,
    context: Option<usize>,
) -> anyhow::Result<Footprint> {
    let ck = Checkpoint::open(dir).with_context(|| format!("reading {}", dir.display()))?;
    let cfg = ck.gemma3()?;
    let context =
        context.unwrap_or(ava_runtime::generate::DEFAULT_CONTEXT.min(cfg.max_position_embeddings));
    if context == 0 || context > cfg.max_position_embeddings {
        bail!(
            "--context {context}: must be between 1 and the model's {} positions",
            cfg.max_position_embeddings
        );
    }
    let bytes = |role: FileRole| -> u64 {
        ck.files()
            .iter()
            .filter(|f| f.role == role)
            .map(|f| f.size)
            .sum()
    };
    let lib = dir.join("lib").join(target.name());
    let library_bytes = dir_bytes(&lib)?;
    let inputs = FootprintInputs {
        weights_bytes: bytes(FileRole::Weights),
        library_bytes,
        tokenizer_bytes: bytes(FileRole::Tokenizer),
        context,
        prefill_tokens: DEFAULT_PREFILL_TOKENS,
        kv: KvDtype::default(),
    };
    Ok(estimate(&cfg, &inputs))
}

/// Total size of the regular files directly in `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .with_context(|| format!("reading {}", dir.display()))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
