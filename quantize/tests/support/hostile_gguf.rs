//! Hostile GGUF files, built byte by byte from a minimal valid file (one `[8]` F32 tensor and
//! `general.architecture = gemma3`), each with the words its error must contain. Shared by
//! `quantize/tests/malformed.rs` and the `alc convert` tests (`tests/cli/convert.rs`).

/// GGUF value type ids (docs/formats/gguf-import.md).
const U8: u32 = 0;
const U32: u32 = 4;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
/// The first value type id past the last one GGUF defines.
const UNKNOWN_TYPE: u32 = 13;
/// GGML tensor type ids.
const F32: u32 = 0;
const Q8_0: u32 = 8;
/// A tensor type id no GGML version has.
const UNKNOWN_TENSOR_TYPE: u32 = 99;
/// The default data alignment.
const ALIGN: usize = 32;

/// One hostile file: its name (without `.gguf`), its bytes and words its error must contain.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub error: &'static str,
}

/// The parts of a file; each hostile case replaces one or two of the valid base's.
#[derive(Clone)]
struct Parts {
    magic: Vec<u8>,
    version: Vec<u8>,
    n_tensors: Vec<u8>,
    n_kv: Vec<u8>,
    kv: Vec<u8>,
    tensor: Vec<u8>,
    data: Vec<u8>,
}

fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A GGUF string: u64 length, then the bytes.
fn gstr(s: &[u8]) -> Vec<u8> {
    [u64le(s.len() as u64), s.to_vec()].concat()
}

/// A tensor table entry.
fn tensor_entry(name: &[u8], dims: &[u64], ggml_type: u32, offset: u64) -> Vec<u8> {
    let mut out = gstr(name);
    out.extend(u32le(dims.len() as u32));
    dims.iter().for_each(|&d| out.extend(u64le(d)));
    out.extend(u32le(ggml_type));
    out.extend(u64le(offset));
    out
}

fn base_kv() -> Vec<u8> {
    [
        gstr(b"general.architecture"),
        u32le(STRING),
        gstr(b"gemma3"),
    ]
    .concat()
}

impl Parts {
    fn base() -> Parts {
        Parts {
            magic: b"GGUF".to_vec(),
            version: u32le(3),
            n_tensors: u64le(1),
            n_kv: u64le(1),
            kv: base_kv(),
            tensor: tensor_entry(b"t", &[8], F32, 0),
            data: (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect(),
        }
    }

    fn with(mut self, edit: impl FnOnce(&mut Parts)) -> Parts {
        edit(&mut self);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = [
            self.magic.as_slice(),
            &self.version,
            &self.n_tensors,
            &self.n_kv,
            &self.kv,
            &self.tensor,
        ]
        .concat();
        out.resize(out.len().next_multiple_of(ALIGN), 0);
        out.extend(&self.data);
        out
    }
}

/// The valid file every case derives from.
pub fn valid() -> Vec<u8> {
    Parts::base().bytes()
}

/// Every hostile case.
pub fn cases() -> Vec<Case> {
    let base = Parts::base;
    let valid = valid();
    let kv = |kv: Vec<u8>| base().with(|p| p.kv = kv).bytes();
    let tensor = |t: Vec<u8>| base().with(|p| p.tensor = t).bytes();
    // An array of one array of one ... of one u32 array: deeper than the reader allows.
    let mut nested = [gstr(b"a"), u32le(ARRAY), u32le(ARRAY), u64le(1)].concat();
    for _ in 0..3 {
        nested.extend([u32le(ARRAY), u64le(1)].concat());
    }
    nested.extend([u32le(U32), u64le(1), vec![0; 4]].concat());
    let byte_kv = [gstr(b"a"), u32le(U8), vec![1]].concat();
    let case = |name, bytes, error| Case { name, bytes, error };
    vec![
        case(
            "bad-magic",
            base().with(|p| p.magic = b"GGML".to_vec()).bytes(),
            "not a GGUF file",
        ),
        case("empty", Vec::new(), "not a GGUF file"),
        case("truncated-header", valid[..14].to_vec(), "truncated"),
        case("truncated-metadata", valid[..40].to_vec(), "truncated"),
        case(
            "version-1",
            base().with(|p| p.version = u32le(1)).bytes(),
            "version 1 is not supported",
        ),
        case(
            "big-endian",
            base()
                .with(|p| p.version = 3u32.to_be_bytes().to_vec())
                .bytes(),
            "big-endian",
        ),
        case(
            "absurd-tensor-count",
            base().with(|p| p.n_tensors = u64le(1 << 62)).bytes(),
            "tensor count",
        ),
        case(
            "absurd-kv-count",
            base().with(|p| p.n_kv = u64le(u64::MAX)).bytes(),
            "metadata entry count",
        ),
        case(
            "absurd-key-length",
            kv([u64le(1 << 60), b"general".to_vec()].concat()),
            "metadata key",
        ),
        case(
            "absurd-array-length",
            kv([gstr(b"a"), u32le(ARRAY), u32le(U32), u64le(1 << 40)].concat()),
            "array length",
        ),
        case("nested-arrays", kv(nested), "nested deeper"),
        case(
            "unknown-value-type",
            kv([gstr(b"a"), u32le(UNKNOWN_TYPE), vec![0; 8]].concat()),
            "unknown value type 13",
        ),
        case(
            "bad-bool",
            kv([gstr(b"a"), u32le(BOOL), vec![2]].concat()),
            "not 0 or 1",
        ),
        case(
            "duplicate-key",
            base()
                .with(|p| {
                    p.n_kv = u64le(2);
                    p.kv = [byte_kv.clone(), byte_kv].concat();
                })
                .bytes(),
            "appears twice",
        ),
        case(
            "absurd-dims",
            tensor(tensor_entry(b"t", &[1 << 40, 1 << 40], F32, 0)),
            "element count overflows",
        ),
        case(
            "too-many-dims",
            tensor(tensor_entry(b"t", &[1; 5], F32, 0)),
            "5 dimensions",
        ),
        case(
            "unknown-tensor-type",
            tensor(tensor_entry(b"t", &[8], UNKNOWN_TENSOR_TYPE, 0)),
            "unknown type id 99",
        ),
        case(
            "partial-block",
            tensor(tensor_entry(b"t", &[33], Q8_0, 0)),
            "not a multiple of the Q8_0 block size",
        ),
        case(
            "misaligned-offset",
            tensor(tensor_entry(b"t", &[8], F32, 4)),
            "not a multiple of the alignment",
        ),
        case(
            "data-past-eof",
            tensor(tensor_entry(b"t", &[8], F32, ALIGN as u64)),
            "runs past the end",
        ),
        case(
            "truncated-data",
            valid[..valid.len() - 4].to_vec(),
            "runs past the end",
        ),
        case(
            "duplicate-tensor",
            base()
                .with(|p| {
                    p.n_tensors = u64le(2);
                    p.tensor = p.tensor.repeat(2);
                })
                .bytes(),
            "appears twice",
        ),
        case(
            "bad-alignment",
            base()
                .with(|p| {
                    p.n_kv = u64le(2);
                    p.kv.extend([gstr(b"general.alignment"), u32le(U32), u32le(48)].concat());
                })
                .bytes(),
            "general.alignment",
        ),
    ]
}

/// The case called `name`.
#[allow(dead_code)] // not every includer looks cases up by name
pub fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no hostile GGUF case {name}"))
}
