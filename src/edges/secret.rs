//! Secret references (`env:NAME`, `file:PATH`) resolved to their values at the moment a
//! driver needs them. Errors name the reference, never the value.

use crate::pure::spec::model::SecretRef;

/// Largest secret file read: a password or token, not a document.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret reference that gave no value. Names the reference, never the value.
#[derive(Debug, thiserror::Error)]
#[error("secret {reference}: {problem}")]
pub struct SecretError {
    /// The reference as written, or `(value not shown)` when it is not one.
    pub reference: String,
    #[source]
    pub problem: SecretProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error("names no environment variable")]
    NoVariableName,
    #[error("environment variable {0} is not set")]
    NotSet(String),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUnicode(String),
    #[error("names no file")]
    NoFile,
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_SECRET_BYTES} bytes; a secret file holds one value")]
    TooLarge { path: String },
    // Must not quote the bytes: they are the secret.
    #[error("{path} is not valid UTF-8")]
    NotUtf8 { path: String },
    #[error("is empty")]
    Empty,
    #[error("is not a secret reference: expected env:NAME or file:PATH")]
    NotAReference,
}

/// The value behind `reference`: the environment variable of `env:NAME`, or the contents
/// of `file:PATH` without one trailing newline (`\n` or `\r\n`), as editors and
/// `echo pw > file` leave one there.
pub fn resolve(reference: &SecretRef) -> Result<String, SecretError> {
    let text = reference.0.as_str();
    let fail = |problem: SecretProblem| SecretError {
        reference: text.to_owned(),
        problem,
    };
    let value = if let Some(name) = text.strip_prefix("env:") {
        if name.is_empty() {
            return Err(fail(SecretProblem::NoVariableName));
        }
        match std::env::var(name) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(fail(SecretProblem::NotSet(name.to_owned())))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(fail(SecretProblem::NotUnicode(name.to_owned())))
            }
        }
    } else if let Some(path) = text.strip_prefix("file:") {
        if path.is_empty() {
            return Err(fail(SecretProblem::NoFile));
        }
        read_secret_file(path).map_err(fail)?
    } else {
        // Not a reference, so possibly the secret itself: never repeat it.
        return Err(SecretError {
            reference: "(value not shown)".to_owned(),
            problem: SecretProblem::NotAReference,
        });
    };
    if value.is_empty() {
        return Err(fail(SecretProblem::Empty));
    }
    Ok(value)
}

fn read_secret_file(path: &str) -> Result<String, SecretProblem> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| SecretProblem::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    // Read one byte past the limit, so that an oversized file is told apart from one
    // exactly at the limit without trusting metadata (a FIFO or /proc file has none).
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretProblem::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretProblem::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut text = String::from_utf8(bytes).map_err(|_| SecretProblem::NotUtf8 {
        path: path.to_owned(),
    })?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::nodes::NodeError;

    fn secret(text: &str) -> SecretRef {
        SecretRef(text.to_owned())
    }

    fn message(e: SecretError) -> String {
        // What a driver reports: the same words.
        let text = e.to_string();
        assert_eq!(NodeError::from(e).to_string(), text);
        text
    }

    #[test]
    fn an_env_reference_gives_the_variable_value() {
        std::env::set_var("CACHEFLOW_SECRET_TEST_ENV_SET", "s3cret value");
        assert_eq!(
            resolve(&secret("env:CACHEFLOW_SECRET_TEST_ENV_SET")).unwrap(),
            "s3cret value"
        );
    }

    #[test]
    fn a_missing_variable_is_named_in_the_error() {
        let e = resolve(&secret("env:CACHEFLOW_SECRET_TEST_NEVER_SET")).unwrap_err();
        assert_eq!(
            message(e),
            "secret env:CACHEFLOW_SECRET_TEST_NEVER_SET: environment variable \
             CACHEFLOW_SECRET_TEST_NEVER_SET is not set"
        );
    }

    #[test]
    fn a_file_reference_loses_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body, expected) in [
            ("lf", "pw\n", "pw"),
            ("crlf", "pw\r\n", "pw"),
            ("two", "pw\n\n", "pw\n"),
            ("none", "pw", "pw"),
            ("spaces", " pw \n", " pw "),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let got = resolve(&secret(&format!("file:{}", path.display()))).unwrap();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn file_errors_name_the_reference_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = message(resolve(&secret(&format!("file:{}", missing.display()))).unwrap_err());
        assert!(
            e.starts_with(&format!("secret file:{}: cannot open", missing.display())),
            "{e}"
        );

        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"hunter2\xff").unwrap();
        let e = message(resolve(&secret(&format!("file:{}", binary.display()))).unwrap_err());
        assert!(e.ends_with("is not valid UTF-8"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = message(resolve(&secret(&format!("file:{}", empty.display()))).unwrap_err());
        assert_eq!(e, format!("secret file:{}: is empty", empty.display()));
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let e = message(resolve(&secret(&format!("file:{}", big.display()))).unwrap_err());
        assert!(e.contains("is larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn a_literal_value_is_refused_without_being_repeated() {
        let e = message(resolve(&secret("hunter2")).unwrap_err());
        assert_eq!(
            e,
            "secret (value not shown): is not a secret reference: expected env:NAME or file:PATH"
        );
    }
}
