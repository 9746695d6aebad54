//! `aon optimize IN.onnx -o OUT.onnx`: runs a pass pipeline over an ONNX graph and reports node
//! counts before and after.

use anyhow::Context;
use ava_passes::{onnx, Pipeline};

use crate::args::OptimizeArgs;
use crate::ui::Ui;

/// Runs `optimize`.
pub fn run(args: &OptimizeArgs, ui: &Ui) -> anyhow::Result<()> {
    let pipeline = Pipeline::parse(&args.passes)?;
    crate::output::claim(&args.output, crate::output::Expect::Onnx, args.force)?;
    let mut graph =
        onnx::load(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let report = pipeline.run(&mut graph).context("optimizing the graph")?;
    crate::output::write_file(&args.output, &onnx::to_bytes(&graph))?;
    ui.result(&report, || {
        let changed: Vec<String> = report
            .changed
            .iter()
            .map(|(p, k)| format!("{p} x{k}"))
            .collect();
        format!(
            "{}: {} -> {} nodes in {} rounds ({})\n",
            report.pipeline,
            report.nodes_before,
            report.nodes_after,
            report.rounds,
            if changed.is_empty() {
                "no change".to_string()
            } else {
                changed.join(", ")
            }
        )
    })
}
