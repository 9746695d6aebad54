//! Compilation targets and the Apache TVM kernel driver.
//!
//! Reserved: the TVM driver and per-target kernel libraries arrive with issue 6. The list of
//! targets itself lives in `ava_core::Target`, because archives name their target.
