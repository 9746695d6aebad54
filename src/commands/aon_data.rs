//! The utterance data of the `aon` verbs lives in [`ava_malbert::data`]; this path stays for
//! the modules that still name it.

pub use ava_malbert::data::*;
