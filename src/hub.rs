//! The CLI side of the hub client ([`ava_hub`]): checkpoint arguments that may be repository
//! ids, and the terminal progress bar adapted to [`ava_hub::Progress`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ava_hub::{download, DownloadRequest, HubOptions, Progress, Snapshot};
use ava_packaging::package::hub_source;
use ava_packaging::Source;
use indicatif::ProgressBar;

use crate::ui::{human_bytes, Ui};

/// An indicatif bar as the hub client's progress sink.
struct Bar<'a>(&'a ProgressBar);

impl Progress for Bar<'_> {
    fn add_total(&self, bytes: u64) {
        self.0.inc_length(bytes);
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// The checkpoint directory a pipeline command should read: `arg` itself when it exists on
/// disk; else, only when it is a well-formed `org/name[@revision]` that does not look like a
/// file name ([`ava_hub::is_hub_argument`]), `arg` read as a hub repository id, downloaded
/// into the cache first (all files but [`ava_hub::CHECKPOINT_EXCLUDE`]); the result is then a
/// `.../models--org--name/snapshots/{commit}` directory. Anything else is "no such file".
pub fn resolve_checkpoint(arg: &str, opts: &HubOptions, ui: &Ui) -> anyhow::Result<PathBuf> {
    let path = Path::new(arg);
    if path.symlink_metadata().is_ok() {
        return Ok(path.to_path_buf());
    }
    if !ava_hub::is_hub_argument(arg) {
        anyhow::bail!(
            "{arg}: no such file or directory (a hub repository is given as org/name[@revision])"
        );
    }
    let request = ava_hub::checkpoint_request(arg)
        .with_context(|| format!("{arg}: no such file or directory, nor a hub repository id"))?;
    ui.info(format!(
        "{arg}: not a local path; fetching it from {}",
        opts.endpoint
    ));
    let snapshot = fetch_with_progress(&request, opts, ui)
        .with_context(|| format!("{arg}: no such directory, and downloading it failed"))?;
    Ok(snapshot.path)
}

/// [`resolve_checkpoint`], with the hub repository and commit when `arg` was fetched (`None`
/// for a local path).
pub fn resolve_checkpoint_source(
    arg: &str,
    opts: &HubOptions,
    ui: &Ui,
) -> anyhow::Result<(PathBuf, Option<Source>)> {
    let local = Path::new(arg).symlink_metadata().is_ok();
    let dir = resolve_checkpoint(arg, opts, ui)?;
    let source = (!local).then(|| checkpoint_source(arg, &dir));
    Ok((dir, source))
}

/// A GGUF file to convert and where it came from ([`resolve_gguf`]).
#[derive(Debug)]
pub struct GgufSource {
    /// The file on disk.
    pub file: PathBuf,
    /// The `tokenizer.json` of the repository or directory the file was named in (`--gguf`),
    /// when it has one; `None` for a plain `.gguf` path.
    pub tokenizer: Option<PathBuf>,
    /// The hub repository and the commit it was resolved to (with the file's sha256), for a
    /// file fetched from the hub.
    pub hub: Option<Source>,
}

/// The GGUF file `source` stands for: `source` itself when `gguf` is `None` (a `.gguf` path);
/// else file `gguf` of `source`, a local directory or, when no such path exists, a hub
/// repository id (the rule of [`resolve_checkpoint`]) of which only that file and its
/// [`ava_hub::GGUF_COMPANIONS`] are downloaded.
pub fn resolve_gguf(
    source: &str,
    gguf: Option<&str>,
    opts: &HubOptions,
    ui: &Ui,
) -> anyhow::Result<GgufSource> {
    let Some(file) = gguf else {
        return Ok(GgufSource {
            file: PathBuf::from(source),
            tokenizer: None,
            hub: None,
        });
    };
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        bail!("--gguf {file}: not a .gguf file name");
    }
    let path = Path::new(source);
    if path.symlink_metadata().is_ok() {
        if !path.is_dir() {
            bail!("{source}: --gguf names a file in a directory or hub repository, not in a file");
        }
        let tokenizer = path.join(ava_hub::GGUF_COMPANIONS[0]);
        return Ok(GgufSource {
            file: path.join(file),
            tokenizer: tokenizer.is_file().then_some(tokenizer),
            hub: None,
        });
    }
    if !ava_hub::is_hub_argument(source) {
        bail!("{source}: no such directory (a hub repository is given as org/name[@revision])");
    }
    let request = ava_hub::gguf_request(source, file)
        .with_context(|| format!("{source}: no such directory, nor a hub repository id"))?;
    ui.info(format!(
        "{source}: not a local path; fetching {file} from {}",
        opts.endpoint
    ));
    let snapshot = fetch_with_progress(&request, opts, ui)
        .with_context(|| format!("{source}: downloading {file} failed"))?;
    let listed = |name: &str| snapshot.files.iter().find(|f| f.path == name);
    let tokenizer = ava_hub::GGUF_COMPANIONS[0];
    let sha256 = listed(file).map(|f| f.sha256.clone()).unwrap_or_default();
    Ok(GgufSource {
        file: snapshot.path.join(file),
        tokenizer: listed(tokenizer).map(|_| snapshot.path.join(tokenizer)),
        hub: Some(Source {
            repository: snapshot.repo_id.clone(),
            revision: Some(snapshot.commit.clone()),
            files: [(file.to_string(), sha256)].into(),
        }),
    })
}

/// The hub source of a checkpoint directory `dir` resolved from `arg`: the repository and
/// commit of its snapshot path, else `arg`'s own revision.
pub fn checkpoint_source(arg: &str, dir: &Path) -> Source {
    let (id, rev) = ava_hub::split_revision(arg);
    Source {
        repository: id.to_string(),
        revision: hub_source(dir).revision.or(rev.map(str::to_string)),
        ..Source::default()
    }
}

/// [`download`] with the terminal progress bar and a summary line on stderr.
pub fn fetch_with_progress(
    request: &DownloadRequest,
    opts: &HubOptions,
    ui: &Ui,
) -> ava_hub::Result<Snapshot> {
    let bar = ui.bytes_progress(0, "download");
    let result = download(request, opts, &Bar(&bar));
    bar.finish_and_clear();
    let snapshot = result?;
    let fetched = snapshot.files.iter().filter(|f| f.downloaded).count();
    ui.info(format!(
        "{}@{} ({}): {} files, {} downloaded ({}), {} already present",
        snapshot.repo_id,
        snapshot.revision,
        &snapshot.commit[..snapshot.commit.len().min(12)],
        snapshot.files.len(),
        fetched,
        human_bytes(snapshot.downloaded_bytes()),
        snapshot.files.len() - fetched
    ));
    Ok(snapshot)
}
