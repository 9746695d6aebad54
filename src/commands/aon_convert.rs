//! `aon convert ALBERT_DIR|REPO -o DIR`: ALBERT -> mALBERT intent classifier (see
//! [`ava_malbert`]).

use ava_malbert::{convert, Options};

use crate::args::AonConvertArgs;
use crate::hub::resolve_checkpoint;
use crate::partial_dir::PartialDir;
use crate::ui::{human_bytes, CountBar, Ui};

/// Runs `aon convert`.
pub fn run(args: &AonConvertArgs, ui: &Ui) -> anyhow::Result<()> {
    let src = resolve_checkpoint(&args.checkpoint, &args.hub.options(ui), ui)?;
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
    ui.result(&r, || {
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
