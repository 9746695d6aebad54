//! Text generation: an [`Engine`] (model + tokenizer, loaded once) and [`Session`]s that keep a
//! KV cache across turns and stream text pieces through a callback.

use std::path::Path;
use std::time::{Duration, Instant};

use ava_core::checkpoint::CONFIG_FILE;
use ava_core::{Gemma3Config, TOKENIZER_FILE};

use crate::error::{Error, Result};
use crate::gemma3::{Gemma3, KvCache, KvDtype, LanguageModel};
use crate::policy::KernelPolicy;
use crate::sampling::{Sampler, SamplingParams};
use crate::source::ModelSource;
use crate::threads::Threads;
use crate::tokenizer::{Tokenizer, END_OF_TURN};
use crate::tvm::{Backend, Gemma3Tvm};

pub use ava_core::footprint::DEFAULT_CONTEXT;

/// Most prompt tokens one forward pass runs ([`Engine::prefill`]): bounds the prefill's
/// activations (about 35 KB a token for the 270M, 130 KB for the 4B) whatever the prompt.
pub const PREFILL_CHUNK: usize = 256;

/// A Gemma 3 model and its tokenizer, ready to serve sessions.
pub struct Engine {
    /// The model on the backend chosen at open.
    model: Box<dyn LanguageModel>,
    tokenizer: Tokenizer,
    load_time: Duration,
    /// Why `Auto` did not take the archive's kernel library (the policy refused it).
    kernel_note: Option<String>,
    /// The threads forward passes run on.
    threads: Threads,
}

impl Engine {
    /// Loads an archive, an unpacked archive or a checkpoint directory. The archive's mapping
    /// is released once the weights are loaded.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Backend::Native)
    }

    /// Like [`Engine::open`], with the backend chosen: `Auto` takes the archive's TVM kernel
    /// library for this machine when it has one, `Tvm` requires it. Under the default policy
    /// no library is loaded (see [`Engine::open_with_policy`]).
    pub fn open_with(path: &Path, backend: Backend) -> Result<Self> {
        Self::open_with_policy(path, backend, &KernelPolicy::default())
    }

    /// [`Engine::open_with`], loading a kernel library only when `policy` allows it
    /// (docs/security.md): `Auto` otherwise runs native and says why in
    /// [`Engine::kernel_note`], `Tvm` fails with the reason.
    pub fn open_with_policy(path: &Path, backend: Backend, policy: &KernelPolicy) -> Result<Self> {
        let start = Instant::now();
        let source = ModelSource::open_with_policy(path, policy)?;
        let config_path = source.label(CONFIG_FILE);
        let config = Gemma3Config::from_json(&config_path, &source.config_json()?)?;
        let tokenizer_path = source.label(TOKENIZER_FILE);
        let bytes = source.file(TOKENIZER_FILE).ok_or(Error::MissingFile {
            path: tokenizer_path.clone(),
        })?;
        let tokenizer = Tokenizer::from_bytes(&bytes, &tokenizer_path)?;
        drop(bytes);
        // Parsing `tokenizer.json` peaks at several times what the tokenizer keeps; hand the
        // freed heap and the file's pages back before the weights come in.
        release_freed_heap();
        source.release_pages();
        let available = Gemma3Tvm::available(&source);
        let permission = source.kernel_permission();
        let kernel_note = match (&permission, backend) {
            (Err(why), Backend::Auto) if available => Some(why.clone()),
            _ => None,
        };
        let use_tvm = match backend {
            Backend::Tvm => true,
            Backend::Auto => available && permission.is_ok(),
            _ => false,
        };
        let model: Box<dyn LanguageModel> = if use_tvm {
            Box::new(Gemma3Tvm::load_tvm(source, config)?)
        } else {
            Box::new(Gemma3::load(&source, config)?)
        };
        Ok(Engine {
            model,
            tokenizer,
            load_time: start.elapsed(),
            kernel_note,
            threads: Threads::default(),
        })
    }

    /// Runs this engine's forward passes on `threads` (by default the process's pools).
    pub fn with_threads(mut self, threads: Threads) -> Self {
        self.threads = threads;
        self
    }

    /// The threads forward passes run on.
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    /// Why the archive's kernel library was not loaded under `Auto`, when the policy refused it.
    pub fn kernel_note(&self) -> Option<&str> {
        self.kernel_note.as_deref()
    }

    /// The model, on the backend chosen at open.
    pub fn model(&self) -> &dyn LanguageModel {
        self.model.as_ref()
    }

    /// The backend running the model: `native` or `tvm`.
    pub fn backend_name(&self) -> &'static str {
        self.model.backend_name()
    }

    /// Runs `tokens` on the chosen backend; returns the last token's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.threads.run(|| self.model.forward(tokens, cache))
    }

    /// Runs a prompt of any length in chunks of [`PREFILL_CHUNK`] tokens (the activations of
    /// one chunk exist at a time) and returns the last token's logits. Checked as a whole
    /// first: on error the cache is left unchanged.
    pub fn prefill(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let needed = cache.position() + tokens.len();
        if needed > cache.max_context() {
            return Err(Error::ContextFull {
                needed,
                max: cache.max_context(),
            });
        }
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = self.forward(chunk, cache)?;
        }
        Ok(logits)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Time `open` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// A new conversation with a KV cache of `context` positions, stored as f16.
    pub fn session(&self, context: usize) -> Session<'_> {
        self.session_as(context, KvDtype::default())
    }

    /// A new conversation with a KV cache of `context` positions stored as `kv`.
    pub fn session_as(&self, context: usize, kv: KvDtype) -> Session<'_> {
        Session {
            engine: self,
            cache: self.model.new_cache_as(context, kv),
            history: Vec::new(),
            pending: None,
        }
    }
}

/// Returns the heap's free pages to the system (glibc keeps freed memory resident otherwise).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases memory the allocator holds free; no pointer changes.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// The model produced `<end_of_turn>`.
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
    /// A stop string appeared in the text.
    StopString,
    /// The callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// A stable lower-case name (`eos`, `end_of_turn`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::EndOfTurn => "end_of_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopString => "stop_string",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Stop when any of these appears in the generated text (it is not emitted).
    pub stop_strings: Vec<String>,
    /// Keep going past EOS and `<end_of_turn>`.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// One streamed piece: new text (whole characters, possibly empty) and the token behind it.
#[derive(Clone, Debug)]
pub struct Piece<'a> {
    /// Text completed by this token.
    pub text: &'a str,
    /// The token id.
    pub token: u32,
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Prompt tokens run.
    pub prefill_tokens: usize,
    /// Time to run them.
    pub prefill: Duration,
    /// Decode steps run (one token each).
    pub decode_tokens: usize,
    /// Time spent in them.
    pub decode: Duration,
    /// From the start of the call to the first generated token.
    pub time_to_first_token: Duration,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill)
    }

    /// Generated tokens per second (after the first).
    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.decode_tokens, self.decode)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated token ids (including a final EOS / `<end_of_turn>`).
    pub tokens: Vec<u32>,
    /// Generated text (without a matched stop string).
    pub text: String,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Logits after the last prompt token.
    pub prompt_logits: Vec<f32>,
    /// Timings.
    pub timings: Timings,
}

/// A conversation: the KV cache and the tokens it holds.
pub struct Session<'e> {
    engine: &'e Engine,
    cache: KvCache,
    history: Vec<u32>,
    /// The last generated token, not yet run through the model.
    pending: Option<u32>,
}

impl Session<'_> {
    /// The KV cache (position, size).
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Every token of the conversation so far, in order: the prompts, the replies and the last
    /// reply's final token (run through the model with the next prompt).
    pub fn transcript(&self) -> Vec<u32> {
        self.history.iter().copied().chain(self.pending).collect()
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.history.clear();
        self.pending = None;
    }

    /// Runs `prompt` after everything so far and generates, calling `on_piece` for every
    /// token; `on_piece` returns `false` to stop. The cache keeps the turn for the next call.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_piece: &mut dyn FnMut(Piece<'_>) -> bool,
    ) -> Result<Generation> {
        let start = Instant::now();
        let input: Vec<u32> = self
            .pending
            .into_iter()
            .chain(prompt.iter().copied())
            .collect();
        if input.is_empty() {
            return Err(Error::Request("empty prompt".into()));
        }
        let engine = self.engine;
        let mut logits = engine.prefill(&input, &mut self.cache)?;
        self.pending = None;
        self.history.extend_from_slice(&input);
        let mut timings = Timings {
            prefill_tokens: input.len(),
            prefill: start.elapsed(),
            ..Timings::default()
        };
        let prompt_logits = logits.clone();
        let mut sampler = Sampler::new(options.sampling.clone());
        let mut out = Output::new(self.engine.tokenizer(), &options.stop_strings);
        let stops = self.stop_tokens(options.ignore_eos);
        let reason = loop {
            let token = sampler.sample(&mut logits, &self.history);
            if out.tokens.is_empty() {
                timings.time_to_first_token = start.elapsed();
            }
            out.tokens.push(token);
            if let Some(reason) = stops.iter().find(|s| s.0 == token).map(|s| s.1) {
                self.pending = Some(token);
                break reason;
            }
            let (piece, hit) = out.push(token)?;
            if !on_piece(Piece {
                text: &piece,
                token,
            }) {
                self.pending = Some(token);
                break StopReason::Cancelled;
            }
            if hit {
                self.pending = Some(token);
                break StopReason::StopString;
            }
            if out.tokens.len() >= options.max_tokens {
                self.pending = Some(token);
                break StopReason::MaxTokens;
            }
            let step = Instant::now();
            logits = engine.forward(&[token], &mut self.cache)?;
            timings.decode += step.elapsed();
            timings.decode_tokens += 1;
            self.history.push(token);
        };
        let rest = out.finish()?;
        if !rest.is_empty() && reason != StopReason::StopString {
            on_piece(Piece {
                text: &rest,
                token: *out.tokens.last().unwrap_or(&0),
            });
        }
        Ok(Generation {
            tokens: out.tokens,
            text: out.text,
            stop_reason: reason,
            prompt_logits,
            timings,
        })
    }

    fn stop_tokens(&self, ignore_eos: bool) -> Vec<(u32, StopReason)> {
        if ignore_eos {
            return Vec::new();
        }
        let mut stops: Vec<(u32, StopReason)> = self
            .engine
            .model()
            .config()
            .eos_token_ids
            .iter()
            .map(|&t| (t, StopReason::Eos))
            .collect();
        if let Some(t) = self.engine.tokenizer().token_id(END_OF_TURN) {
            stops.retain(|s| s.0 != t);
            stops.push((t, StopReason::EndOfTurn));
        }
        stops
    }
}

/// Generated text so far, with stop strings held back until they are ruled out.
struct Output<'t> {
    stream: crate::tokenizer::TextStream<'t>,
    stops: &'t [String],
    tokens: Vec<u32>,
    text: String,
    emitted: usize,
}

impl<'t> Output<'t> {
    fn new(tokenizer: &'t Tokenizer, stops: &'t [String]) -> Self {
        Output {
            stream: tokenizer.stream(),
            stops,
            tokens: Vec::new(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds a token; returns the text safe to emit now and whether a stop string appeared.
    fn push(&mut self, token: u32) -> Result<(String, bool)> {
        self.text.push_str(&self.stream.push(token)?);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(at);
            return Ok((self.take(at), true));
        }
        let hold = self
            .stops
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let mut safe = self.text.len().saturating_sub(hold).max(self.emitted);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        Ok((self.take(safe), false))
    }

    fn take(&mut self, upto: usize) -> String {
        let piece = self.text.get(self.emitted..upto).unwrap_or("").to_string();
        self.emitted = self.emitted.max(upto);
        piece
    }

    /// Text not yet emitted.
    fn finish(&mut self) -> Result<String> {
        self.text.push_str(&self.stream.finish()?);
        let end = self.text.len();
        Ok(self.take(end))
    }
}
