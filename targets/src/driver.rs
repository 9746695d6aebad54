//! Running the Python TVM driver (`targets/driver/*.py`, embedded in this crate) on a spec.

use std::path::{Path, PathBuf};
use std::process::Command;

use ava_core::kernel_table::KernelEntry;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{io, Error, Result};
use crate::kernels::KernelSpec;
use crate::spec::TargetSpec;

/// The driver's sources (file name, text), written next to each spec so the binary needs no
/// repository checkout. `build.py` is the entry point.
pub const DRIVER_FILES: &[(&str, &str)] = &[
    ("build.py", include_str!("../driver/build.py")),
    ("qmatmul.py", include_str!("../driver/qmatmul.py")),
    ("attention.py", include_str!("../driver/attention.py")),
    ("int8mm.py", include_str!("../driver/int8mm.py")),
    ("encoder.py", include_str!("../driver/encoder.py")),
    ("fastmath.py", include_str!("../driver/fastmath.py")),
    ("norms.py", include_str!("../driver/norms.py")),
];

/// Every driver source, concatenated: what cache keys of built kernels hash.
pub fn driver_fingerprint() -> String {
    DRIVER_FILES
        .iter()
        .map(|(name, text)| format!("== {name}\n{text}"))
        .collect()
}
/// Environment variable naming the Python interpreter that has `apache-tvm` installed.
pub const PYTHON_ENV: &str = "AVA_PYTHON";
/// The former name of [`PYTHON_ENV`], still read when it is unset.
pub const LEGACY_PYTHON_ENV: &str = "AVA_TVM_PYTHON";
/// Environment variable naming a directory where compiled kernel objects are cached by content.
pub const CACHE_ENV: &str = "AVA_KERNEL_CACHE";
/// Prefix of the driver's last stderr line on failure.
const ERROR_PREFIX: &str = "ava-driver-error: ";

/// What the driver produced for one target.
#[derive(Debug)]
pub struct DriverOutput {
    /// The relocatable object holding every kernel.
    pub object: PathBuf,
    /// The driver's table.
    pub table: DriverTable,
    /// Whether the object came from the cache.
    pub cached: bool,
}

/// The driver's `table.json`: `{"kernels": [{name, symbol, op, args}], "tvm_version",
/// "compile_seconds"}` (the time is not kept).
#[derive(Debug, Deserialize)]
pub struct DriverTable {
    /// The kernels, as the kernel table lists them.
    pub kernels: Vec<KernelEntry>,
    /// Apache TVM's version.
    #[serde(default)]
    pub tvm_version: Option<String>,
}

/// The interpreter to run the driver with: `$AVA_PYTHON` (or the older `$AVA_TVM_PYTHON`),
/// else the `.venv` of the checkout the tools were built from (`make setup` creates it). Never a
/// `.venv` found from the current directory: a directory a user merely works in must not choose
/// the code that runs.
pub fn python() -> PathBuf {
    for var in [PYTHON_ENV, LEGACY_PYTHON_ENV] {
        match std::env::var_os(var) {
            Some(p) if !p.is_empty() => return PathBuf::from(p),
            _ => {}
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// Generates and compiles `kernels` for `target` into `work` (reusing `cache` when given).
pub fn run(
    target: &TargetSpec,
    kernels: &[KernelSpec],
    work: &Path,
    cache: Option<&Path>,
) -> Result<DriverOutput> {
    let spec = json!({
        "target": {"name": target.target.name(), "tvm": target.tvm_target(), "lanes": target.cpu.lanes},
        "kernels": kernels.iter().map(|k| k.json.clone()).collect::<Vec<_>>(),
    });
    let key = hex::encode(Sha256::digest(format!("{}\n{spec}", driver_fingerprint())));
    let out_dir = match cache {
        Some(c) => c.join(&key),
        None => work.join("driver-out"),
    };
    let (object, table_path) = (out_dir.join("kernels.o"), out_dir.join("table.json"));
    if cache.is_some() && object.is_file() && table_path.is_file() {
        return Ok(DriverOutput {
            table: read_table(&table_path)?,
            object,
            cached: true,
        });
    }
    // Build into a private directory, then rename: concurrent builds never see half a result.
    let tmp = tempfile::Builder::new()
        .prefix(".driver-")
        .tempdir_in(work)
        .map_err(io(work))?;
    let mut spec = spec;
    spec["out_dir"] = json!(tmp.path());
    let spec_path = tmp.path().join("spec.json");
    let script = tmp.path().join("build.py");
    std::fs::write(&spec_path, spec.to_string()).map_err(io(&spec_path))?;
    for (name, text) in DRIVER_FILES {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&spec_path)
        .output()
        .map_err(|source| Error::NoPython {
            python: python.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(driver_error(target, &String::from_utf8_lossy(&out.stderr)));
    }
    let parent = out_dir.parent().unwrap_or(work);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let built = tmp.path().join("built");
    std::fs::create_dir(&built).map_err(io(&built))?;
    for f in ["kernels.o", "table.json"] {
        let from = tmp.path().join(f);
        std::fs::rename(&from, built.join(f)).map_err(io(&from))?;
    }
    if std::fs::rename(&built, &out_dir).is_err() && !object.is_file() {
        return Err(Error::BadOutput {
            path: out_dir,
            message: "could not store the driver's output".into(),
        });
    }
    Ok(DriverOutput {
        table: read_table(&table_path)?,
        object,
        cached: false,
    })
}

fn read_table(path: &Path) -> Result<DriverTable> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadOutput {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Turns the driver's stderr into an error naming the failing kernel.
fn driver_error(target: &TargetSpec, stderr: &str) -> Error {
    let last = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(ERROR_PREFIX));
    let (kernel, message) = match last.and_then(|l| l.split_once(": ")) {
        Some((k, m)) => (k.to_string(), m.to_string()),
        None => {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            ("(unknown)".to_string(), tail.join("\n"))
        }
    };
    Error::Driver {
        target: target.target.name().to_string(),
        kernel,
        message,
    }
}
