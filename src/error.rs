//! Library error type. Every message names the file, field or value that is wrong.

use std::path::{Path, PathBuf};

/// Errors of the rgshield library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// In the message rather than chained, so it is printed once.
        err: std::io::Error,
    },
    /// A data set could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A model file is malformed or disagrees with itself.
    #[error("{path}: {msg}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Shapes or widths do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An argument or configuration value is out of its domain.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// The server's state database (`serve --state`) could not be opened, read or written.
    #[error("state database {path}: {msg}")]
    State {
        /// The database file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
    /// A network operation of the HTTP server (binding, accepting, serving) failed.
    #[error("{addr}: {err}")]
    Net {
        /// The address involved.
        addr: String,
        /// What failed.
        err: std::io::Error,
    },
}

impl Error {
    /// [`Error::Io`] for `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    /// [`Error::Model`] for `path`.
    pub fn model(path: &Path, msg: impl Into<String>) -> Self {
        Error::Model {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// [`Error::State`] for `path`.
    pub fn state(path: &Path, msg: impl std::fmt::Display) -> Self {
        Error::State {
            path: path.to_path_buf(),
            msg: msg.to_string(),
        }
    }
    /// [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// [`Error::Shape`].
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `value ≥ min`, else an error naming `what` (e.g. `"attack: --samples"`) and the value.
pub fn check_at_least(what: &str, value: usize, min: usize) -> Result<()> {
    if value < min {
        return Err(Error::invalid(format!(
            "{what} = {value} (must be ≥ {min})"
        )));
    }
    Ok(())
}

/// `value` finite and > 0, else an error naming `what` and the value.
pub fn check_positive(what: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::invalid(format!(
            "{what} = {value} (must be finite and > 0)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_checks_name_the_value() {
        assert!(check_at_least("x", 2, 2).is_ok());
        let e = check_at_least("attack: --samples", 1, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("attack: --samples = 1 (must be ≥ 2)"), "{e}");
        assert!(check_positive("ε", 0.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = check_positive("ε", bad).unwrap_err().to_string();
            assert!(e.contains("must be finite and > 0"), "{e}");
        }
    }
}
