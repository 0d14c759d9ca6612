//! Loads the workflow definitions a deployment runs from a directory of
//! `*.toml` files, so a bad file stops the process before it takes work.

use std::path::{Path, PathBuf};

use q2c_core::definition::{self, Definition};

/// Why the definitions could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file in it could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        reason: std::io::Error,
    },
    /// A definition is invalid; the message names the file, step and problem.
    #[error(transparent)]
    Invalid(#[from] definition::Error),
    /// Two files define workflows of the same name.
    #[error("{second}: workflow `{name}` is already defined in {first}")]
    DuplicateName {
        /// The workflow name.
        name: String,
        /// The file that defined it first.
        first: PathBuf,
        /// The file that defined it again.
        second: PathBuf,
    },
    /// The directory has no definitions at all.
    #[error("{0} holds no workflow definitions (*.toml)")]
    Empty(PathBuf),
}

/// Every definition in `directory`, sorted by file name, each validated.
pub fn load_dir(directory: &Path) -> Result<Vec<(PathBuf, Definition)>, Error> {
    let read_error = |reason| Error::Read {
        path: directory.to_owned(),
        reason,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Empty(directory.to_owned()));
    }

    let mut loaded: Vec<(PathBuf, Definition)> = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|reason| Error::Read {
            path: path.clone(),
            reason,
        })?;
        let definition = Definition::parse(&path.display().to_string(), &text)?;
        if let Some((first, _)) = loaded
            .iter()
            .find(|(_, other)| other.name() == definition.name())
        {
            return Err(Error::DuplicateName {
                name: definition.name().to_owned(),
                first: first.clone(),
                second: path,
            });
        }
        loaded.push((path, definition));
    }
    Ok(loaded)
}
