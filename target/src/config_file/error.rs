//! Errors of loading and saving the configuration file: each names the
//! JSON path of the offending field (`targets[0].luns[2].sector_size`) so
//! the operator knows what to fix.

use std::path::PathBuf;

use thiserror::Error;

use super::MAX_FILE_SIZE;

/// Errors loading or saving a configuration file.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} is larger than {MAX_FILE_SIZE} bytes")]
    TooLarge { file: PathBuf },
    /// Bad JSON, an unknown key or a value of the wrong type.
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    /// A well-formed value that is not acceptable.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl FileError {
    pub(super) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FileError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the offending field, when the error has one.
    pub fn json_path(&self) -> Option<&str> {
        match self {
            FileError::Syntax { path, .. } | FileError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}
