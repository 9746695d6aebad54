//! Builds the tiny Gemma 3 fixture's kernel library for every target and checks the ELF files:
//! machine, no libtvm_* dependency, exported `__tvm_ffi_*` symbols equal to the kernel table.

use std::path::Path;
use std::process::Command;

use ava_core::Target;
use ava_targets::{build, BuildOptions, TargetSpec};

fn readelf(args: &[&str], lib: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(lib)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf {args:?} {}", lib.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tiny_fixture_libraries_for_every_target() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/gemma3-tiny");
    let out = tempfile::tempdir().unwrap();
    let specs: Vec<TargetSpec> = Target::ALL
        .iter()
        .map(|t| TargetSpec::new(*t, None).unwrap())
        .collect();
    let reports = build(&fixture, &specs, out.path(), &BuildOptions::default()).unwrap();
    assert_eq!(reports.len(), 3);
    for r in &reports {
        let machine = if r.target == "linux-x86_64" {
            "X86-64"
        } else {
            "AArch64"
        };
        let header = readelf(&["-h"], &r.library);
        assert!(header.contains(machine), "{}: {header}", r.target);
        let dynamic = readelf(&["-d"], &r.library);
        assert!(!dynamic.contains("libtvm"), "{}: {dynamic}", r.target);
        let syms = readelf(&["--dyn-syms", "-W"], &r.library);
        let mut exported: Vec<String> = syms
            .lines()
            .filter(|l| l.contains(" GLOBAL ") && !l.contains(" UND "))
            .filter_map(|l| l.split_whitespace().last())
            .filter(|s| s.starts_with("__tvm_ffi_") && *s != "__tvm_ffi_main")
            .map(str::to_string)
            .collect();
        exported.sort();
        let table: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&r.table).unwrap()).unwrap();
        let mut listed: Vec<String> = table["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["symbol"].as_str().unwrap().to_string())
            .collect();
        listed.sort();
        assert_eq!(exported, listed, "{}", r.target);
        assert_eq!(table["target"], r.target.as_str());
    }
}
