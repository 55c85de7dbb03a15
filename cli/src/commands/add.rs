//! `p2pmodel add PATH`: a file becomes a blob; a folder becomes a model
//! whose manifest lists every file under it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2pmodel_protocol::{Manifest, ManifestEntry};
use p2pmodel_store::Store;

pub fn run(store: Store, path: &Path) -> anyhow::Result<ExitCode> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let hash = if metadata.is_dir() {
        let mut files = Vec::new();
        collect_files(path, path, &mut files)?;
        if files.is_empty() {
            bail!("{} holds no files to add", path.display());
        }
        let mut entries = Vec::with_capacity(files.len());
        for (relative, file) in files {
            let hash = store
                .import_file(&file)
                .with_context(|| format!("adding {}", file.display()))?;
            let size = std::fs::metadata(&file)?.len();
            tracing::info!(%hash, path = %relative, "added");
            entries.push(ManifestEntry {
                path: relative,
                size,
                hash,
                sha256: None,
                mirrors: Vec::new(),
            });
        }
        let manifest =
            Manifest::new(entries).context("the folder cannot be described as a model")?;
        store.put_manifest(&manifest)?
    } else {
        store
            .import_file(path)
            .with_context(|| format!("adding {}", path.display()))?
    };
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// Every regular file under `dir` (following links to files, not into
/// linked folders), with its `/`-separated path relative to `root`, sorted.
fn collect_files(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, PathBuf)>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let link = entry.file_type()?.is_symlink();
        let metadata =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.is_dir() {
            if link {
                tracing::warn!(path = %path.display(), "not following a link to a folder");
                continue;
            }
            collect_files(root, &path, files)?;
        } else if metadata.is_file() {
            let relative = path.strip_prefix(root).expect("walked from root");
            let parts: Option<Vec<&str>> = relative
                .components()
                .map(|part| part.as_os_str().to_str())
                .collect();
            let Some(parts) = parts else {
                bail!("{} is not a UTF-8 path", path.display())
            };
            files.push((parts.join("/"), path));
        }
    }
    Ok(())
}
