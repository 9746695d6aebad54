//! The runtime memory estimate of a built stage directory (`alc compile --memory-budget`), and
//! the manifest's `stages.memory` record of it, which `alc inspect` shows and `alc validate`
//! compares with the measured peak RSS. The arithmetic lives in `ava_core::footprint`.

use std::path::Path;

use ava_core::footprint::{
    estimate, Footprint, FootprintInputs, KvDtype, DEFAULT_CONTEXT, DEFAULT_PREFILL_TOKENS,
};
use ava_core::kernel_table::LIB_DIR;
use ava_core::{Checkpoint, FileRole, Target};
use ava_packaging::Manifest;
use serde::{Deserialize, Serialize};

use crate::error::{self, Error};
use crate::Result;

/// Key of the estimate in the manifest's `stages`.
pub const MEMORY_STAGE: &str = "memory";

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

    /// Whether the estimate exceeds the budget (never without one).
    pub fn over_budget(&self) -> bool {
        self.budget_bytes
            .is_some_and(|budget| self.footprint.total_bytes > budget)
    }
}

/// The estimate for a built stage directory (`checkpoint/` of `alc build`) on `target`.
/// Without an explicit `context`, the runtime's default context capped at the model's positions.
pub fn for_built_dir(dir: &Path, target: Target, context: Option<usize>) -> Result<Footprint> {
    let ck = Checkpoint::open(dir)?;
    let cfg = ck.gemma3()?;
    let context = context.unwrap_or(DEFAULT_CONTEXT.min(cfg.max_position_embeddings));
    if context == 0 || context > cfg.max_position_embeddings {
        return Err(Error::Unsupported(format!(
            "--context {context}: must be between 1 and the model's {} positions",
            cfg.max_position_embeddings
        )));
    }
    let bytes = |role: FileRole| -> u64 {
        ck.files()
            .iter()
            .filter(|f| f.role == role)
            .map(|f| f.size)
            .sum()
    };
    let library_bytes = dir_bytes(&dir.join(LIB_DIR).join(target.name()))?;
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
fn dir_bytes(dir: &Path) -> Result<u64> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(error::io(dir))? {
        let meta = entry.and_then(|e| e.metadata()).map_err(error::io(dir))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/gemma3-tiny")
    }

    #[test]
    fn the_estimate_takes_the_models_context_and_refuses_a_longer_one() {
        let f = for_built_dir(&tiny(), Target::LinuxX86_64, None).unwrap();
        // The default context, capped at the fixture's 256 positions; no kernel library.
        assert_eq!((f.context, f.library_bytes), (256, 0));
        assert!(f.weights_bytes > 0 && f.total_bytes > f.weights_bytes);
        let short = for_built_dir(&tiny(), Target::LinuxX86_64, Some(16)).unwrap();
        assert!(short.kv_cache_bytes < f.kv_cache_bytes);
        for bad in [0, 257] {
            let err = for_built_dir(&tiny(), Target::LinuxX86_64, Some(bad)).unwrap_err();
            assert!(err.to_string().contains("256 positions"), "{err}");
        }
    }

    #[test]
    fn a_record_is_over_budget_only_past_its_budget() {
        let footprint = for_built_dir(&tiny(), Target::LinuxX86_64, Some(16)).unwrap();
        let total = footprint.total_bytes;
        let record = |budget_bytes| MemoryRecord {
            footprint: footprint.clone(),
            budget_bytes,
        };
        assert!(!record(None).over_budget());
        assert!(!record(Some(total)).over_budget());
        assert!(record(Some(total - 1)).over_budget());
    }
}
