//! `alc chat` on the tiny Gemma fixture: turns from stdin, the conversation kept in the KV
//! cache from one turn to the next.

use serde_json::Value;

use crate::common::token_ids;
use crate::{alc, alc_stdin, gemma3_tiny};

#[test]
fn two_turns_share_one_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    let common = ["--max-tokens", "6", "--kv-cache", "f32"];
    let chat = alc_stdin(
        tmp.path(),
        &[&["--json", "chat", model][..], &common].concat(),
        "hello there\n\nand then?\n",
    )
    .ok();
    let turns: Vec<Value> = chat
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(turns.len(), 2, "{}", chat.stdout);
    let (first, second) = (&turns[0], &turns[1]);
    assert_eq!(
        (first["turn"].as_u64(), second["turn"].as_u64()),
        (Some(1), Some(2))
    );
    // The second reply continues everything: the first prompt, the first reply, then the
    // second message in the template.
    let before: Vec<u64> = token_ids(&first["prompt_ids"])
        .into_iter()
        .chain(token_ids(&first["tokens"]))
        .collect();
    let prompt = token_ids(&second["prompt_ids"]);
    assert!(prompt.len() > before.len(), "{second}");
    assert_eq!(prompt[..before.len()], before[..], "{second}");
    let used = prompt.len() + token_ids(&second["tokens"]).len() - 1;
    assert_eq!(
        second["context_used"].as_u64(),
        Some(used as u64),
        "{second}"
    );

    // The reply is the one the model gives to the whole transcript at once.
    let list: Vec<String> = prompt.iter().map(u64::to_string).collect();
    let run = alc(
        tmp.path(),
        &[
            &["--json", "run", model, "--prompt-ids", &list.join(",")][..],
            &common,
        ]
        .concat(),
    )
    .ok()
    .json();
    assert_eq!(run["tokens"], second["tokens"]);

    // Streaming without --json: a reply a line, nothing but the replies on stdout.
    let text = alc_stdin(
        tmp.path(),
        &[&["chat", model][..], &common].concat(),
        "hi\n",
    )
    .ok()
    .stdout;
    assert!(text.ends_with('\n'), "{text}");
}

#[test]
fn ctrl_c_stops_a_reply_not_the_chat() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let mut child = Command::new(env!("CARGO_BIN_EXE_alc"))
        // Two replies of at most 100 tokens (plus the turn markers) fit the fixture's 256
        // positions even when the interrupt lands after the first reply has ended.
        .args(["chat", model.to_str().unwrap(), "--max-tokens", "100"])
        .current_dir(tmp.path())
        .env("AVA_CONFIG_DIR", crate::config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    // Once the first reply has begun (or ended), Ctrl-C: it stops that reply, or is ignored at
    // the prompt; either way the chat goes on to the next message.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    stdin.write_all(b"and now?\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(rest.ends_with('\n'), "{rest}");
}
