//! The convert stage's entry point: a llama.cpp `gemma3` GGUF becomes a Hugging Face-layout
//! checkpoint ([`crate::import`]: `model.safetensors` in f32 or bf16, transformers-5
//! `config.json`, `generation_config.json`), with a `tokenizer.json` copied in when one is
//! given. `alc convert` and `alc compile` both go through [`Conversion`]. Format notes:
//! `docs/formats/gguf-import.md`.

use std::path::{Path, PathBuf};

use ava_core::TOKENIZER_FILE;

use crate::import::{write_checkpoint, ImportPlan, OutDtype};
use crate::{Error, GgufFile, Result};

/// What the convert stage writes.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Element type of the written weights.
    pub dtype: OutDtype,
    /// A tokenizer.json to copy into the checkpoint.
    pub tokenizer: Option<PathBuf>,
}

/// A GGUF file read and checked, ready to be written.
pub struct Conversion {
    file: GgufFile,
    /// What will be written.
    pub plan: ImportPlan,
}

impl Conversion {
    /// Reads and checks `gguf` ([`ImportPlan::gemma3`]).
    pub fn open(gguf: &Path) -> Result<Self> {
        let file = GgufFile::open(gguf)?;
        let plan = ImportPlan::gemma3(&file).map_err(|e| Error::Step {
            what: format!("converting {}", gguf.display()),
            source: Box::new(e),
        })?;
        Ok(Conversion { file, plan })
    }

    /// Writes the checkpoint into the existing, empty directory `out`; `progress` gets the
    /// weight bytes written so far (of [`ImportPlan::output_bytes`]).
    pub fn write(
        &self,
        out: &Path,
        opts: &ConvertOptions,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        write_checkpoint(&self.file, &self.plan, opts.dtype, out, progress)?;
        if let Some(src) = &opts.tokenizer {
            std::fs::copy(src, out.join(TOKENIZER_FILE)).map_err(|e| Error::io(src, e))?;
        }
        Ok(())
    }
}

/// Converts `gguf` into the existing, empty directory `out`.
pub fn convert(gguf: &Path, out: &Path, opts: &ConvertOptions) -> Result<ImportPlan> {
    let c = Conversion::open(gguf)?;
    c.write(out, opts, &mut |_| {})?;
    Ok(c.plan)
}
