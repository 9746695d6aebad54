//! `alc chat`: an interactive conversation. Each stdin line is a user turn, wrapped in the Gemma
//! chat template; the reply streams to stdout and the KV cache keeps the whole conversation, so
//! a turn runs only its own tokens. Ctrl-C stops the reply being written (the turn is closed
//! and the conversation goes on) and is ignored at the prompt; end of input (Ctrl-D) ends the
//! program.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::Context;
use ava_runtime::tokenizer::{gemma_chat_turn, END_OF_TURN};
use ava_runtime::{GenerateOptions, StopReason};
use serde::Serialize;

use crate::args::run::ChatArgs;
use crate::output::{catch_interrupts, take_interrupt};
use crate::ui::Ui;

/// One turn as `alc chat --json` prints it (one JSON object a line).
#[derive(Serialize)]
struct TurnReport<'a> {
    turn: usize,
    /// Every token the reply continues: the conversation so far and this turn's prompt.
    prompt_ids: &'a [u32],
    tokens: &'a [u32],
    text: &'a str,
    stop_reason: &'a str,
    /// KV cache positions used after the reply.
    context_used: usize,
}

/// Runs `alc chat`.
pub fn run(args: &ChatArgs, ui: &Ui) -> anyhow::Result<()> {
    let (engine, _) = super::run::open_engine(&args.model, ui)?;
    let context = super::run::context_length(args.context, &engine)?;
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: args.sampling.params(),
        ..GenerateOptions::default()
    };
    let mut session = engine.session_as(context, args.kv_cache.into());
    catch_interrupts(true);
    let interactive = std::io::stdin().is_terminal() && !ui.json;
    if interactive {
        ui.info("Type a message and press Enter; Ctrl-C stops a reply, Ctrl-D ends the chat.");
    }
    let mut closed = true;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let mut turn = 0;
    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        let limit = crate::text_input::MAX_TEXT_BYTES;
        let read = (&mut stdin)
            .take(limit + 1)
            .read_line(&mut line)
            .context("reading stdin")?;
        if read == 0 {
            break;
        }
        anyhow::ensure!(
            (read as u64) <= limit,
            "a message of more than {} MiB",
            limit >> 20
        );
        let message = line.trim_end_matches(['\n', '\r']);
        if message.trim().is_empty() {
            continue;
        }
        turn += 1;
        let text = turn_text(message, turn == 1, args.system.as_deref(), closed);
        let ids = engine.tokenizer().encode(&text, turn == 1)?;
        let prompt_ids: Vec<u32> = session
            .transcript()
            .into_iter()
            .chain(ids.clone())
            .collect();
        let out = reply(&mut session, &ids, &options, !ui.json)?;
        // A reply that did not end its turn is closed before the next message.
        closed = out.stop_reason == StopReason::EndOfTurn;
        if ui.json {
            let report = TurnReport {
                turn,
                prompt_ids: &prompt_ids,
                tokens: &out.tokens,
                text: &out.text,
                stop_reason: out.stop_reason.name(),
                context_used: session.cache().position(),
            };
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// The template text of one user turn. The previous reply's `<end_of_turn>` is already in the
/// conversation when it `closed` its turn; otherwise it is added here.
fn turn_text(message: &str, first: bool, system: Option<&str>, closed: bool) -> String {
    let message = match system.filter(|_| first) {
        Some(system) => format!("{system}\n\n{message}"),
        None => message.to_string(),
    };
    let close = if first || closed { "" } else { END_OF_TURN };
    format!("{close}{}", gemma_chat_turn(&message, first))
}

/// Generates one reply, streaming it to stdout when `stream`; Ctrl-C stops it.
fn reply(
    session: &mut ava_runtime::Session<'_>,
    ids: &[u32],
    options: &GenerateOptions,
    stream: bool,
) -> anyhow::Result<ava_runtime::Generation> {
    // A Ctrl-C pressed at the prompt is not for this reply.
    take_interrupt();
    super::run::generate_to_stdout(session, ids, options, stream, take_interrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_follow_the_gemma_template() {
        assert_eq!(
            turn_text("hi", true, None, true),
            "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            turn_text("hi", true, Some("Be brief."), true),
            "<start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            turn_text("more", false, Some("ignored"), true),
            "\n<start_of_turn>user\nmore<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            turn_text("more", false, None, false),
            "<end_of_turn>\n<start_of_turn>user\nmore<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
