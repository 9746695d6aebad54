//! A Hugging Face style checkpoint directory: `config.json`, safetensors weights (one file or
//! shards with `model.safetensors.index.json`), tokenizer files and the rest, read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::gemma3::WEIGHT_PREFIXES;
use crate::config::{read_json, AlbertConfig, Gemma3Config, ModelFamily};
use crate::error::{Error, Result};
use crate::quant::{group_fits, scales_shape, QuantFormat, SCALES_SUFFIX};
use crate::safetensors_file::SafetensorsFile;
use crate::tensor::{TensorInfo, TensorView};

/// The model config file.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a single-file checkpoint, as the stages write it.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The usual shard index file.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Suffix of any safetensors shard index.
pub const INDEX_SUFFIX: &str = ".safetensors.index.json";
/// Extension of weight files.
pub const SAFETENSORS_EXTENSION: &str = "safetensors";
/// The generation config (sampling defaults, end-of-turn ids) of a Gemma 3 checkpoint.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// The Hugging Face tokenizers file, the one tokenizer every pipeline carries to the device.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer's options (special tokens, maximum length) beside [`TOKENIZER_FILE`].
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// An encoder's ONNX graph (f32, or weight-only quantized), as the aon stages write it.
pub const ONNX_MODEL_FILE: &str = "model.onnx";
/// An encoder's ONNX graph with int8 operators (`aon int8`), preferred when both are present.
pub const INT8_ONNX_MODEL_FILE: &str = "model.int8.onnx";
/// A classifier's label names by class index (a JSON array of strings).
pub const LABELS_FILE: &str = "labels.json";
/// Tokenizer files we recognise (HF tokenizers, SentencePiece, WordPiece, BPE).
pub const TOKENIZER_FILES: [&str; 10] = [
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];
/// Extensions of PyTorch pickle checkpoints, which we refuse to unpickle.
const PICKLE_EXTENSIONS: [&str; 3] = ["pt", "pth", "ckpt"];
/// `pytorch_model.bin`, `pytorch_model-00001-of-00002.bin`: pickles too.
const PICKLE_BIN_PREFIX: &str = "pytorch_model";

/// What a file in a checkpoint directory is for.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// `config.json`.
    Config,
    /// A `*.safetensors` file.
    Weights,
    /// A `*.safetensors.index.json` shard index.
    WeightsIndex,
    /// A tokenizer file (see [`TOKENIZER_FILES`]).
    Tokenizer,
    /// Anything else (`generation_config.json`, README, pickles...).
    Other,
}

impl FileRole {
    /// Classifies a file by name.
    pub fn of(file_name: &str) -> FileRole {
        if file_name == CONFIG_FILE {
            FileRole::Config
        } else if file_name.ends_with(INDEX_SUFFIX) {
            FileRole::WeightsIndex
        } else if extension(file_name) == Some(SAFETENSORS_EXTENSION) {
            FileRole::Weights
        } else if TOKENIZER_FILES.contains(&file_name) {
            FileRole::Tokenizer
        } else {
            FileRole::Other
        }
    }
}

/// One regular file of a checkpoint directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the checkpoint directory (a plain file name).
    pub relative: String,
    /// What the file is for.
    pub role: FileRole,
    /// Size in bytes.
    pub size: u64,
}

/// An opened checkpoint: parsed config and validated, memory-mapped weights.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    config_path: PathBuf,
    config: Value,
    files: Vec<CheckpointFile>,
    shards: Vec<SafetensorsFile>,
    /// Tensor name -> index in `shards`.
    tensors: BTreeMap<String, usize>,
}

/// Which weight files to load.
enum WeightSource {
    /// Every `*.safetensors` file (no index).
    All(Vec<PathBuf>),
    /// Shards named by an index.
    Indexed {
        index: PathBuf,
        weight_map: BTreeMap<String, String>,
    },
}

impl Checkpoint {
    /// Opens `dir`: lists its files, parses `config.json` and validates every weight file.
    ///
    /// Pickle-only checkpoints are refused ([`Error::PickleRefused`]); a directory without
    /// weights gives [`Error::NoWeights`]. With an index, only the shards it names are loaded.
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let files = list_files(&dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let config = read_json(&config_path)?;
        let source = weight_source(&dir, &files)?;
        let (shards, tensors) = match &source {
            WeightSource::All(paths) => load_shards(paths, None)?,
            WeightSource::Indexed { index, weight_map } => {
                let names: std::collections::BTreeSet<&String> = weight_map.values().collect();
                let paths: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
                let (shards, tensors) = load_shards(&paths, Some(index))?;
                check_index(index, weight_map, &shards, &tensors)?;
                (shards, tensors)
            }
        };
        Ok(Checkpoint {
            dir,
            config_path,
            config,
            files,
            shards,
            tensors,
        })
    }

    /// The checkpoint directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `config.json`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The parsed `config.json`.
    pub fn config_json(&self) -> &Value {
        &self.config
    }

    /// The model family named by the config.
    pub fn family(&self) -> Result<ModelFamily> {
        ModelFamily::detect(&self.config_path, &self.config)
    }

    /// Every regular, non-hidden file of the directory, sorted by relative path.
    pub fn files(&self) -> &[CheckpointFile] {
        &self.files
    }

    /// The loaded weight files.
    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// The tensor `name`, or [`Error::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.tensors
            .get(name)
            .and_then(|&i| self.shards.get(i))
            .and_then(|s| s.tensor(name))
            .ok_or_else(|| Error::MissingTensor {
                path: self.dir.clone(),
                name: name.to_string(),
            })
    }

    /// Drops tensor `name`'s pages from the process (see [`SafetensorsFile::release`]).
    pub fn release(&self, name: &str) {
        if let Some(shard) = self.tensors.get(name).and_then(|&i| self.shards.get(i)) {
            shard.release(name);
        }
    }

    /// Drops the pages of `bytes`, a slice of tensor `name`, from the process.
    pub fn release_bytes(&self, name: &str, bytes: &[u8]) {
        if let Some(shard) = self.tensors.get(name).and_then(|&i| self.shards.get(i)) {
            shard.release_bytes(bytes);
        }
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Whether the checkpoint has weight `name`, plain or as quantized planes.
    pub fn contains_weight(&self, name: &str) -> bool {
        self.contains(name) || QuantFormat::detect(name, |n| self.contains(n)).is_some()
    }

    /// The file holding tensor `name`.
    pub fn tensor_file(&self, name: &str) -> Option<&Path> {
        let &i = self.tensors.get(name)?;
        self.shards.get(i).map(SafetensorsFile::path)
    }

    /// Every tensor, sorted by name.
    pub fn tensor_views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors
            .iter()
            .filter_map(|(name, &i)| self.shards.get(i)?.tensor(name))
    }

    /// Descriptions of every tensor, sorted by name.
    pub fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.tensor_views().map(|t| t.info()).collect()
    }

    /// Checks that every `(name, shape)` exists with that shape. The first missing tensor
    /// gives [`Error::MissingTensor`], the first wrong one [`Error::ShapeMismatch`].
    pub fn check_shapes(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, shape) in expected {
            if !self.contains(name) && self.check_quantized(name, shape)? {
                continue;
            }
            let t = self.tensor(name)?;
            if t.shape != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    path: self.tensor_file(name).unwrap_or(&self.dir).to_path_buf(),
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.shape.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Whether `name` (a `[rows, cols]` weight) is stored as quantized planes
    /// (`docs/formats/q4bf16.md`) of the right shapes; `false` when it has no planes.
    fn check_quantized(&self, name: &str, shape: &[usize]) -> Result<bool> {
        let Some(format) = QuantFormat::detect(name, |n| self.contains(n)) else {
            return Ok(false);
        };
        let &[rows, cols] = shape else {
            return Ok(false);
        };
        let scales_name = format!("{name}{SCALES_SUFFIX}");
        let scales = self.tensor(&scales_name)?;
        let group = match scales.shape {
            [r, g] if *r == rows && *g > 0 && cols % g == 0 => cols / g,
            _ => 0,
        };
        let planes = [
            (
                format!("{name}{}", format.code_suffix()),
                format.code_shape(rows, cols),
            ),
            (scales_name, scales_shape(rows, cols, group.max(1))),
        ];
        for (plane, want) in planes {
            let t = self.tensor(&plane)?;
            if t.shape != want.as_slice() || !group_fits(cols, group) {
                return Err(Error::ShapeMismatch {
                    path: self.tensor_file(&plane).unwrap_or(&self.dir).to_path_buf(),
                    name: plane.clone(),
                    expected: want,
                    found: t.shape.to_vec(),
                });
            }
        }
        Ok(true)
    }

    /// Total number of tensor elements.
    pub fn num_parameters(&self) -> u64 {
        self.tensor_views().map(|t| t.numel() as u64).sum()
    }

    /// Total bytes of tensor data (headers excluded).
    pub fn weights_bytes(&self) -> u64 {
        self.tensor_views().map(|t| t.data.len() as u64).sum()
    }

    /// The Gemma 3 config, with `weight_prefix` set to where `embed_tokens.weight` is.
    pub fn gemma3(&self) -> Result<Gemma3Config> {
        let mut config = Gemma3Config::from_json(&self.config_path, &self.config)?;
        let mut candidates = vec![config.weight_prefix.as_str()];
        candidates.extend(WEIGHT_PREFIXES);
        config.weight_prefix = self.find_prefix(&candidates, "embed_tokens.weight")?;
        Ok(config)
    }

    /// The ALBERT config, with `weight_prefix` set to `albert.` or empty, as the tensors say.
    pub fn albert(&self) -> Result<AlbertConfig> {
        let mut config = AlbertConfig::from_json(&self.config_path, &self.config)?;
        let candidates = [config.weight_prefix.as_str(), ""];
        config.weight_prefix =
            self.find_prefix(&candidates, "embeddings.word_embeddings.weight")?;
        Ok(config)
    }

    /// The first prefix `p` with a tensor `p + suffix`; else `MissingTensor` for the first.
    fn find_prefix(&self, candidates: &[&str], suffix: &str) -> Result<String> {
        candidates
            .iter()
            .find(|p| self.contains_weight(&format!("{p}{suffix}")))
            .map(|p| p.to_string())
            .ok_or_else(|| Error::MissingTensor {
                path: self.dir.clone(),
                name: format!("{}{suffix}", candidates.first().copied().unwrap_or("")),
            })
    }
}

fn extension(file_name: &str) -> Option<&str> {
    Path::new(file_name).extension().and_then(|e| e.to_str())
}

fn is_pickle(file_name: &str) -> bool {
    let ext = extension(file_name);
    PICKLE_EXTENSIONS.iter().any(|p| ext == Some(*p))
        || (file_name.starts_with(PICKLE_BIN_PREFIX) && ext == Some("bin"))
}

/// Regular files of `dir` (symlinks followed, hidden files skipped), sorted.
fn list_files(dir: &Path) -> Result<Vec<CheckpointFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let relative = entry.file_name().to_string_lossy().into_owned();
        if relative.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            // A dangling symlink (half-downloaded cache entry) is not a file of the checkpoint.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        if meta.is_file() {
            files.push(CheckpointFile {
                role: FileRole::of(&relative),
                path,
                relative,
                size: meta.len(),
            });
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

/// Decides which weight files to load.
fn weight_source(dir: &Path, files: &[CheckpointFile]) -> Result<WeightSource> {
    let indexes: Vec<&CheckpointFile> = files
        .iter()
        .filter(|f| f.role == FileRole::WeightsIndex)
        .collect();
    let index = match indexes.as_slice() {
        [] => None,
        [one] => Some(*one),
        several => match several.iter().find(|f| f.relative == INDEX_FILE) {
            Some(f) => Some(*f),
            None => {
                let names: Vec<&str> = several.iter().map(|f| f.relative.as_str()).collect();
                let reason = format!("several index files and none is {INDEX_FILE}: {names:?}");
                return Err(Error::index(dir, reason));
            }
        },
    };
    if let Some(index) = index {
        let weight_map = read_weight_map(&index.path, files)?;
        return Ok(WeightSource::Indexed {
            index: index.path.clone(),
            weight_map,
        });
    }
    let weights: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.role == FileRole::Weights)
        .map(|f| f.path.clone())
        .collect();
    if !weights.is_empty() {
        return Ok(WeightSource::All(weights));
    }
    match files.iter().find(|f| is_pickle(&f.relative)) {
        Some(pickle) => Err(Error::PickleRefused {
            path: pickle.path.clone(),
        }),
        None => Err(Error::NoWeights {
            path: dir.to_path_buf(),
        }),
    }
}

/// Parses `weight_map` and checks every shard name is a plain, existing file of the directory.
fn read_weight_map(index: &Path, files: &[CheckpointFile]) -> Result<BTreeMap<String, String>> {
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::index(index, "missing or non-object `weight_map`"))?;
    let mut out = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::index(index, format!("shard of tensor `{tensor}` is not a string"))
        })?;
        if !is_plain_file_name(shard) {
            return Err(Error::index(
                index,
                format!(
                    "shard `{shard}` of tensor `{tensor}` is not a plain file name in the \
                     checkpoint directory"
                ),
            ));
        }
        let exists = files
            .iter()
            .any(|f| f.relative == shard && f.role == FileRole::Weights);
        if !exists {
            return Err(Error::index(
                index,
                format!("shard `{shard}` of tensor `{tensor}` is not a .safetensors file in the directory"),
            ));
        }
        out.insert(tensor.clone(), shard.to_string());
    }
    Ok(out)
}

/// No separators, no `..`, not absolute, not empty, not hidden.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', ':', '\0'])
        && !Path::new(name).is_absolute()
}

type Loaded = (Vec<SafetensorsFile>, BTreeMap<String, usize>);

/// Opens `paths` and maps each tensor to its file; a name in two files is an error.
fn load_shards(paths: &[PathBuf], index: Option<&Path>) -> Result<Loaded> {
    let mut shards = Vec::with_capacity(paths.len());
    let mut tensors: BTreeMap<String, usize> = BTreeMap::new();
    for path in paths {
        let shard = SafetensorsFile::open(path)?;
        let i = shards.len();
        for t in shard.tensors() {
            if let Some(&first) = tensors.get(t.name) {
                let other = paths
                    .get(first)
                    .map_or_else(String::new, |p| p.display().to_string());
                let reason = format!(
                    "tensor `{}` is stored in both {other} and {}",
                    t.name,
                    path.display()
                );
                return Err(match index {
                    Some(index) => Error::index(index, reason),
                    None => Error::safetensors(path, reason),
                });
            }
            tensors.insert(t.name.to_string(), i);
        }
        shards.push(shard);
    }
    Ok((shards, tensors))
}

/// Every tensor of the index must be in the shard it names.
fn check_index(
    index: &Path,
    weight_map: &BTreeMap<String, String>,
    shards: &[SafetensorsFile],
    tensors: &BTreeMap<String, usize>,
) -> Result<()> {
    for (tensor, shard) in weight_map {
        let found = tensors
            .get(tensor)
            .and_then(|&i| shards.get(i))
            .and_then(|s| s.path().file_name())
            .and_then(|n| n.to_str());
        if found != Some(shard.as_str()) {
            let elsewhere = found.map_or_else(String::new, |f| format!(" (it is in {f})"));
            return Err(Error::index(
                index,
                format!(
                    "tensor `{tensor}` is mapped to {shard}, which does not contain it{elsewhere}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(FileRole::of("config.json"), FileRole::Config);
        assert_eq!(
            FileRole::of("model-00001-of-00002.safetensors"),
            FileRole::Weights
        );
        assert_eq!(
            FileRole::of("model.safetensors.index.json"),
            FileRole::WeightsIndex
        );
        assert_eq!(FileRole::of("spiece.model"), FileRole::Tokenizer);
        assert_eq!(FileRole::of("tokenizer.json"), FileRole::Tokenizer);
        assert_eq!(FileRole::of("generation_config.json"), FileRole::Other);
        assert_eq!(FileRole::of("pytorch_model.bin"), FileRole::Other);
        let json = serde_json::to_string(&FileRole::WeightsIndex).unwrap_or_default();
        assert_eq!(json, "\"weightsindex\"");
    }

    #[test]
    fn pickles() {
        assert!(is_pickle("pytorch_model.bin"));
        assert!(is_pickle("pytorch_model-00001-of-00003.bin"));
        assert!(is_pickle("model.pt") && is_pickle("x.pth") && is_pickle("last.ckpt"));
        assert!(!is_pickle("model.safetensors") && !is_pickle("ggml-model.bin"));
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in [
            "",
            "../x.safetensors",
            "a/b.safetensors",
            "a\\b",
            "/etc/passwd",
            "..",
            ".x",
        ] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
