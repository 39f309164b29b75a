//! `walrus-gateway put --quilt FILE...`: store the files as one quilt through the gateway's
//! `PUT /v1/quilts`, each a patch named by its file name; prints `<quilt_patch_id>  <file>`.

use anyhow::{bail, Context};
use bytes::Bytes;
use std::path::PathBuf;

pub fn put(gateway: &str, token: Option<&str>, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut parts = Vec::with_capacity(files.len());
    let mut labels = std::collections::HashMap::new();
    for file in files {
        let identifier = file
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| {
                format!(
                    "{} has no UTF-8 file name to name its patch",
                    file.display()
                )
            })?
            .to_owned();
        let label = file.display().to_string();
        if let Some(other) = labels.insert(identifier.clone(), label.clone()) {
            bail!("{other} and {label} would both be patch {identifier:?}; rename one");
        }
        let bytes = super::read_limited(file, 16 << 30)?;
        parts.push((identifier, Bytes::from(bytes)));
    }
    let patches = super::runtime()?
        .block_on(gateway::quilt::put_quilt(gateway, token, &parts))
        .context("cannot store the quilt")?;
    for (identifier, id) in patches {
        let label = labels
            .get(&identifier)
            .map_or(identifier.as_str(), String::as_str);
        println!("{id}  {label}");
    }
    Ok(())
}
