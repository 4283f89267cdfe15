//! Commit trust: is the head about to be rolled out signed by a listed signer?
//!
//! `Settings.trust.requireSignedHead` with `trust.signers[]` (an SSH public key and/or an
//! OpenPGP fingerprint each). The signature git stores in the commit (`gpgsig`) is
//! checked against the exact bytes that were signed:
//!
//! - **SSH** (`git config gpg.format ssh`): an `sshsig` in namespace `git`, verified in
//!   process against each listed key (ed25519, ECDSA P-256, RSA).
//! - **OpenPGP**: verified by `gpg --verify`, as git does, with the public keys in gpg's
//!   keyring (`GNUPGHOME`); the signing key's fingerprint (or its primary key's) must be
//!   listed. A revoked or expired key, a bad signature, or a key gpg does not have is
//!   refused, each with its own reason.
//!
//! Which policy judges a head is the caller's choice; the reconciler uses the one of the
//! last revision it took (see docs/config.md, "Commit trust"): otherwise a head could
//! switch the check off for itself.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::pure::spec::model::{Desired, Trust};
use crate::pure::spec::signers::normalise_fingerprint;

/// The policy that judges `head`: the one of `previous`, the last revision taken, so a
/// head cannot lift the check for itself; for the first revision ever taken (or when the
/// last one cannot be read any more: `None`), the head's own.
pub fn policy(previous: Option<&Desired>, head: &Desired) -> Trust {
    match previous {
        Some(d) => d.settings.trust.clone(),
        None => head.settings.trust.clone(),
    }
}

/// Who signed a trusted head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The `name` of the listed signer.
    pub signer: String,
    /// `ssh` or `openpgp`.
    pub kind: &'static str,
}

/// Why a head is not trusted (journaled with the refusal). The text starts with
/// `untrusted:` when the signature itself is refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{commit}: {source}")]
    BadCommitId {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("untrusted: {short} is not signed, and trust.requireSignedHead is set")]
    Unsigned { short: String },
    #[error("cannot read the signature of {short}: {source}")]
    Unreadable {
        short: String,
        #[source]
        source: git2::Error,
    },
    #[error("untrusted: the signature of {short} is not text")]
    NotText { short: String },
    #[error("untrusted: {short} carries a signature that is neither SSH nor OpenPGP (X.509 is not supported)")]
    UnknownFormat { short: String },
    #[error("untrusted: {short}: {source}")]
    Signature {
        short: String,
        #[source]
        source: SignatureError,
    },
}

impl TrustError {
    /// A refusal waits for a new commit; gpg that cannot run, or a signature git could
    /// not read, may work on the next try.
    pub fn kind(&self) -> crate::edges::source::FailureKind {
        use crate::edges::source::FailureKind;
        match self {
            TrustError::Unreadable { .. } => FailureKind::Transient,
            TrustError::Signature { source, .. } if source.is_gpg_failure() => {
                FailureKind::Transient
            }
            _ => FailureKind::Refusal,
        }
    }
}

/// Why one signature is refused (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the SSH signature does not parse: {0}")]
    SshUnparsable(#[source] ssh_key::Error),
    #[error("trust.signers `{name}`: the SSH key does not parse: {source}")]
    SignerKeyUnparsable {
        name: String,
        #[source]
        source: ssh_key::Error,
    },
    #[error("the SSH signature by {name}'s key does not verify: {source}")]
    SshDoesNotVerify {
        name: String,
        #[source]
        source: ssh_key::Error,
    },
    #[error("signed with SSH key {fingerprint}, which is not in trust.signers")]
    SshUnlisted { fingerprint: String },
    #[error("the OpenPGP signature by key {0} is bad")]
    PgpBad(String),
    #[error("signed with OpenPGP key {0}, which is revoked")]
    PgpRevoked(String),
    #[error("signed with OpenPGP key {0}, which has expired")]
    PgpKeyExpired(String),
    #[error("the OpenPGP signature by key {0} has expired")]
    PgpSignatureExpired(String),
    #[error("signed with OpenPGP key {0}, which is not in gpg's keyring (GNUPGHOME): import the signers' public keys")]
    PgpNoPublicKey(String),
    #[error("gpg could not check the OpenPGP signature by key {0}")]
    PgpUnchecked(String),
    #[error("gpg did not report a valid OpenPGP signature")]
    PgpNoValidSignature,
    #[error("signed with OpenPGP key {0}, which is not in trust.signers")]
    PgpUnlisted(String),
    #[error(transparent)]
    Gpg(#[from] GpgError),
}

impl SignatureError {
    fn is_gpg_failure(&self) -> bool {
        matches!(self, SignatureError::Gpg(_))
    }
}

/// `gpg --verify` could not be run (as opposed to refusing the signature).
#[derive(Debug, thiserror::Error)]
pub enum GpgError {
    #[error("cannot write {path}: {source}")]
    WriteSignature {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run gpg to check an OpenPGP signature: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot give gpg the signed data: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("gpg failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// Check `commit` against `trust`. `Ok(None)`: the policy does not ask for signatures.
/// `Err`: why the head is not trusted (journaled with the refusal).
pub fn check(
    repo: &git2::Repository,
    commit: &str,
    trust: &Trust,
) -> Result<Option<Signed>, TrustError> {
    if !trust.require_signed_head {
        return Ok(None);
    }
    let short = crate::pure::render::short_id(commit).to_owned();
    let oid = git2::Oid::from_str(commit).map_err(|source| TrustError::BadCommitId {
        commit: commit.to_owned(),
        source,
    })?;
    let (signature, data) = match repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(TrustError::Unsigned { short })
        }
        Err(source) => return Err(TrustError::Unreadable { short, source }),
    };
    let Ok(signature) = std::str::from_utf8(&signature) else {
        return Err(TrustError::NotText { short });
    };
    let checked = if signature.contains("-----BEGIN SSH SIGNATURE-----") {
        ssh(signature, &data, trust)
    } else if signature.contains("-----BEGIN PGP SIGNATURE-----") {
        openpgp(signature, &data, trust)
    } else {
        return Err(TrustError::UnknownFormat { short });
    };
    checked
        .map(Some)
        .map_err(|source| TrustError::Signature { short, source })
}

fn ssh(signature: &str, data: &[u8], trust: &Trust) -> Result<Signed, SignatureError> {
    let sig = ssh_key::SshSig::from_pem(signature.trim()).map_err(SignatureError::SshUnparsable)?;
    let key_of_sig = sig.public_key();
    for signer in &trust.signers {
        let Some(listed) = &signer.ssh else { continue };
        let key = ssh_key::PublicKey::from_openssh(listed.trim()).map_err(|source| {
            SignatureError::SignerKeyUnparsable {
                name: signer.name.clone(),
                source,
            }
        })?;
        if key.key_data() != key_of_sig {
            continue;
        }
        return match key.verify("git", data, &sig) {
            Ok(()) => Ok(Signed {
                signer: signer.name.clone(),
                kind: "ssh",
            }),
            Err(source) => Err(SignatureError::SshDoesNotVerify {
                name: signer.name.clone(),
                source,
            }),
        };
    }
    let fingerprint = ssh_key::PublicKey::from(key_of_sig.clone())
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    Err(SignatureError::SshUnlisted { fingerprint })
}

fn openpgp(signature: &str, data: &[u8], trust: &Trust) -> Result<Signed, SignatureError> {
    let status = gpg_verify(signature, data)?;
    let mut fingerprints = Vec::new();
    let mut key_id = None;
    for line in status.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["[GNUPG:]", "BADSIG", id, ..] => return Err(SignatureError::PgpBad(id.to_string())),
            ["[GNUPG:]", "REVKEYSIG", id, ..] => {
                return Err(SignatureError::PgpRevoked(id.to_string()))
            }
            ["[GNUPG:]", "EXPKEYSIG", id, ..] => {
                return Err(SignatureError::PgpKeyExpired(id.to_string()))
            }
            ["[GNUPG:]", "EXPSIG", id, ..] => {
                return Err(SignatureError::PgpSignatureExpired(id.to_string()))
            }
            ["[GNUPG:]", "NO_PUBKEY", id, ..] => {
                return Err(SignatureError::PgpNoPublicKey(id.to_string()))
            }
            ["[GNUPG:]", "ERRSIG", id, ..] => key_id = Some(id.to_string()),
            ["[GNUPG:]", "VALIDSIG", fpr, rest @ ..] => {
                fingerprints.push(fpr.to_string());
                // The primary key's fingerprint is the last field (a subkey may sign).
                if rest.len() >= 9 {
                    fingerprints.push(rest[rest.len() - 1].to_string());
                }
            }
            _ => {}
        }
    }
    if fingerprints.is_empty() {
        return Err(match key_id {
            Some(id) => SignatureError::PgpUnchecked(id),
            None => SignatureError::PgpNoValidSignature,
        });
    }
    for signer in &trust.signers {
        let Some(listed) = &signer.openpgp else {
            continue;
        };
        let listed = normalise_fingerprint(listed);
        if fingerprints
            .iter()
            .any(|f| normalise_fingerprint(f) == listed)
        {
            return Ok(Signed {
                signer: signer.name.clone(),
                kind: "openpgp",
            });
        }
    }
    Err(SignatureError::PgpUnlisted(
        fingerprints.last().cloned().unwrap_or_else(|| "?".into()),
    ))
}

/// `gpg --verify` of a detached signature over `data`: its `--status-fd` lines. The
/// signature goes through a private temporary file, the data through stdin.
fn gpg_verify(signature: &str, data: &[u8]) -> Result<String, GpgError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path =
        std::env::temp_dir().join(format!("cacheflow-sig-{}-{nanos}.asc", std::process::id()));
    std::fs::write(&path, signature).map_err(|source| GpgError::WriteSignature {
        path: path.display().to_string(),
        source,
    })?;
    let result = (|| {
        let mut child = Command::new("gpg")
            .args(["--batch", "--no-tty", "--status-fd", "1", "--verify"])
            .arg(&path)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(GpgError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(data).map_err(GpgError::Stdin)?;
        }
        let out = child.wait_with_output().map_err(GpgError::Wait)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_policy_no_check() {
        let dir = std::env::temp_dir().join(format!("cacheflow-trust-{}", std::process::id()));
        let repo = git2::Repository::init(&dir).unwrap();
        let sig = git2::Signature::now("t", "t@t.invalid").unwrap();
        let tree = repo
            .find_tree(repo.index().unwrap().write_tree().unwrap())
            .unwrap();
        let id = repo
            .commit(Some("HEAD"), &sig, &sig, "m", &tree, &[])
            .unwrap()
            .to_string();
        assert_eq!(check(&repo, &id, &Trust::default()).unwrap(), None);
        let required = Trust {
            require_signed_head: true,
            signers: Vec::new(),
        };
        let err = check(&repo, &id, &required).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "untrusted: {} is not signed, and trust.requireSignedHead is set",
                &id[..12]
            )
        );
        assert_eq!(err.kind(), crate::edges::source::FailureKind::Refusal);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
