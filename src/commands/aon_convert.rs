//! `aon convert ALBERT_DIR|REPO -o DIR`: ALBERT -> mALBERT intent classifier (see
//! [`ava_malbert`]).

use ava_malbert::{convert, ConvertReport, Options};
use ava_packaging::Source;
use serde::Serialize;

use crate::args::AonConvertArgs;
use crate::hub::resolve_checkpoint_source;
use crate::partial_dir::PartialDir;
use crate::ui::{human_bytes, CountBar, Ui};

/// What `aon convert --json` prints: the conversion, and the hub repository and commit of a
/// fetched source.
#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    convert: ConvertReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
}

/// Runs `aon convert`.
pub fn run(args: &AonConvertArgs, ui: &Ui) -> anyhow::Result<()> {
    let (src, source) = resolve_checkpoint_source(&args.checkpoint, &args.hub.options(ui), ui)?;
    let progress = ui.count_progress("encoding");
    let opts = Options {
        intents: args.intents.as_deref(),
        corpus: args.corpus.as_deref(),
        prune_vocab: args.prune_vocab,
        max_seq_len: args.max_seq_len,
        l2: args.l2,
        progress: &CountBar(&progress),
    };
    if args.output.symlink_metadata().is_ok() && !args.force {
        anyhow::bail!(
            "{}: already exists (convert writes a new directory; --force replaces it)",
            args.output.display()
        );
    }
    let temp = PartialDir::beside(&args.output)?;
    let r = convert(&src, temp.path(), &opts)?;
    temp.persist(&args.output)?;
    let report = Report { convert: r, source };
    let r = &report.convert;
    ui.result(&report, || {
        let mut s = format!(
            "wrote {}: vocabulary {} -> {}, positions {} -> {}, weights {} -> {} (saved {})\nhead: {} ({} labels)\n",
            args.output.display(),
            r.vocab_before,
            r.vocab_after,
            r.positions_before,
            r.positions_after,
            human_bytes(r.weight_bytes_before),
            human_bytes(r.weight_bytes_after),
            human_bytes(r.weight_bytes_before.saturating_sub(r.weight_bytes_after)),
            r.head,
            r.labels
        );
        if let (Some(t), Some(v)) = (r.train_accuracy, r.val_accuracy) {
            s += &format!("fitted head: train accuracy {:.2}%, validation accuracy {:.2}%\n", 100.0 * t, 100.0 * v);
        }
        s
    })
}
