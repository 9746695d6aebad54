//! The runtime memory estimate as the commands show it: one line for `alc compile` and
//! `alc inspect`, and `--memory-budget`'s error. The estimate and its manifest record are
//! [`ava_targets::memory`].

use anyhow::bail;
use ava_targets::memory::MemoryRecord;

use crate::ui::human_bytes;

/// Bytes in a MiB (the unit of `--memory-budget`).
pub const MIB: u64 = 1 << 20;

/// One line: total, its parts, and the budget.
pub fn describe(record: &MemoryRecord) -> String {
    let f = &record.footprint;
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
    if let Some(b) = record.budget_bytes {
        s += &format!(", budget {}", human_bytes(b));
    }
    s
}

/// Fails when the estimate exceeds the budget.
pub fn check(record: &MemoryRecord) -> anyhow::Result<()> {
    match record.budget_bytes {
        Some(budget) if record.over_budget() => bail!(
            "estimated runtime memory {} exceeds --memory-budget {} MiB: {}",
            human_bytes(record.footprint.total_bytes),
            budget / MIB,
            describe(record)
        ),
        _ => Ok(()),
    }
}
