//! The encoder conversion of the `aon` pipeline: an ALBERT checkpoint becomes a mALBERT intent
//! classifier ([`convert()`]: vocabulary pruning in [`vocab`], the intent head in [`head`]
//! fitted by L-BFGS on the pooled output of the batched frozen encoder in [`encode`], trained
//! on [`intents`]), and the utterance data and out-of-scope threshold the later `aon` stages
//! score with ([`data`], [`oos`]), and the validation of a compiled classifier against its
//! float original ([`validate()`]). Progress goes to the caller's [`Progress`]. See
//! `docs/aon.md`.

pub mod convert;
pub mod data;
pub mod encode;
mod error;
pub mod head;
pub mod intents;
pub mod oos;
mod progress;
pub mod quantize;
pub mod validate;
pub mod vocab;

pub use convert::{convert, ConvertReport, Options, Weights, LABELS_FILE};
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use quantize::{quantize, QuantizeOptions, QuantizeReport};
pub use validate::{validate, ValidateOptions, Validation};
