//! Writes the committed corpus of hostile archives (`fixtures/archives/bad/`).
//!
//! Run with `make fixtures-archives`. Headers are written by hand, because a well-behaved tar
//! library refuses to produce most of these. Each file is paired with the error the reader
//! must give in `packaging/tests/hostile.rs`.

use std::fs;
use std::io::Write;
use std::path::Path;

use ava_packaging::{MANIFEST_NAME, SIGNATURE_NAME};
use sha2::{Digest, Sha256};

const BLOCK: usize = 512;

/// One raw tar entry.
struct Raw<'a> {
    name: &'a str,
    kind: u8,
    data: &'a [u8],
    /// Size written in the header (defaults to `data.len()`).
    size: Option<u64>,
    link: &'a str,
}

fn entry<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: b'0',
        data,
        size: None,
        link: "",
    }
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{:0width$o}", value, width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

fn header(raw: &Raw) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..raw.name.len()].copy_from_slice(raw.name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], raw.size.unwrap_or(raw.data.len() as u64));
    octal(&mut h[136..148], 0);
    h[156] = raw.kind;
    h[157..157 + raw.link.len()].copy_from_slice(raw.link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for raw in entries {
        out.extend_from_slice(&header(raw));
        out.extend_from_slice(raw.data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A manifest listing `(path, bytes)` files.
fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    manifest_with(files, "")
}

fn manifest_with(files: &[(&str, &[u8])], padding: &str) -> Vec<u8> {
    let list: Vec<serde_json::Value> = files
        .iter()
        .map(|(p, d)| serde_json::json!({"path": p, "size": d.len(), "sha256": sha256(d), "role": "other"}))
        .collect();
    let mut stages = serde_json::Map::new();
    if !padding.is_empty() {
        stages.insert("padding".into(), serde_json::Value::String(padding.into()));
    }
    let value = serde_json::json!({
        "format_version": 1, "name": "bad", "version": "1", "family": "gemma3",
        "quantization": "f32", "target": "any",
        "created_by": {"tool": "make_bad_archives", "version": "1", "git_commit": "none"},
        "source": {"repository": "local", "revision": null, "files": {}},
        "files": list, "stages": stages,
    });
    serde_json::to_vec_pretty(&value).expect("manifest serialises")
}

fn zstd(data: &[u8], pledge: bool) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 19).expect("encoder");
    if pledge {
        enc.set_pledged_src_size(Some(data.len() as u64))
            .expect("pledge");
    }
    enc.write_all(data).expect("compress");
    enc.finish().expect("finish")
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/archives/bad".into());
    let dir = Path::new(&dir);
    fs::create_dir_all(dir).expect("create corpus dir");
    let hello: &[u8] = b"hello";
    let m = manifest(&[("hello.txt", hello)]);
    let good = |extra: Vec<Raw>| {
        let mut all = vec![entry(MANIFEST_NAME, &m)];
        all.extend(extra);
        tar(&all)
    };
    let mut out: Vec<(&str, Vec<u8>)> = vec![
        ("traversal.tar", good(vec![entry("../hello.txt", hello)])),
        (
            "traversal-nested.tar",
            good(vec![entry("a/../../hello.txt", hello)]),
        ),
        ("absolute.tar", good(vec![entry("/tmp/hello.txt", hello)])),
        (
            "symlink.tar",
            good(vec![Raw {
                kind: b'2',
                link: "/etc/passwd",
                ..entry("hello.txt", b"")
            }]),
        ),
        (
            "hardlink.tar",
            good(vec![Raw {
                kind: b'1',
                link: MANIFEST_NAME,
                ..entry("hello.txt", b"")
            }]),
        ),
        (
            "device.tar",
            good(vec![Raw {
                kind: b'3',
                ..entry("hello.txt", b"")
            }]),
        ),
        (
            "directory.tar",
            good(vec![Raw {
                kind: b'5',
                ..entry("hello.txt", b"")
            }]),
        ),
        (
            "duplicate.tar",
            good(vec![entry("hello.txt", hello), entry("hello.txt", hello)]),
        ),
        (
            "unlisted.tar",
            good(vec![entry("hello.txt", hello), entry("extra.txt", hello)]),
        ),
        ("missing.tar", good(vec![])),
        (
            "size-mismatch.tar",
            good(vec![entry("hello.txt", b"hello!")]),
        ),
        ("checksum.tar", good(vec![entry("hello.txt", b"jello")])),
        (
            "manifest-not-first.tar",
            tar(&[entry("hello.txt", hello), entry(MANIFEST_NAME, &m)]),
        ),
        ("trailing-data.tar", {
            let mut t = good(vec![entry("hello.txt", hello)]);
            t.extend_from_slice(b"appended after the end marker");
            t
        }),
    ];
    // Cut in the middle of the data of its second entry.
    let long = [7u8; 3000];
    let m_long = manifest(&[("hello.txt", &long)]);
    let full = tar(&[entry(MANIFEST_NAME, &m_long), entry("hello.txt", &long)]);
    let cut = full[..full.len() - 2 * BLOCK - 1500].to_vec();
    out.push(("truncated.tar", cut));
    // A small valid archive followed by 64 MiB of zeros: far past the bound its manifest allows.
    let mut bomb = good(vec![entry("hello.txt", hello)]);
    bomb.resize(bomb.len() + (64 << 20), 0);
    out.push(("zstd-bomb.tar.zst", zstd(&bomb, false)));
    out.push(("zstd-bomb-declared.tar.zst", zstd(&bomb, true)));
    // A 17 MiB manifest (over the 16 MiB limit), compressed to a few KiB.
    let huge = manifest_with(&[("hello.txt", hello)], &" ".repeat(17 << 20));
    out.push((
        "huge-manifest.tar.zst",
        zstd(
            &tar(&[entry(MANIFEST_NAME, &huge), entry("hello.txt", hello)]),
            false,
        ),
    ));
    let version = |v: u32| {
        String::from_utf8(m.clone())
            .expect("utf8")
            .replace("\"format_version\": 1", &format!("\"format_version\": {v}"))
    };
    let v99 = version(99);
    out.push((
        "format-version-99.tar",
        tar(&[
            entry(MANIFEST_NAME, v99.as_bytes()),
            entry("hello.txt", hello),
        ]),
    ));
    // Signed (version 2) without the signature entry.
    let v2 = version(2);
    out.push((
        "signature-missing.tar",
        tar(&[
            entry(MANIFEST_NAME, v2.as_bytes()),
            entry("hello.txt", hello),
        ]),
    ));
    // A signature over another manifest.
    let key = ava_packaging::SecretKey::from_seed(&[42; 32]);
    let other = version(2).replace("\"bad\"", "\"good\"");
    let forged = key.sign_manifest(other.as_bytes());
    out.push((
        "signature-mismatch.tar",
        tar(&[
            entry(MANIFEST_NAME, v2.as_bytes()),
            entry(SIGNATURE_NAME, &forged),
            entry("hello.txt", hello),
        ]),
    ));
    // Every entry intact, but the end-of-archive marker is missing.
    let mut cut = good(vec![entry("hello.txt", hello)]);
    cut.truncate(cut.len() - 2 * BLOCK);
    out.push(("end-marker-missing.tar", cut));
    for (name, bytes) in out {
        fs::write(dir.join(name), bytes).expect("write corpus file");
    }
}
