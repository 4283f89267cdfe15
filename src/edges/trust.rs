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

/// Check `commit` against `trust`. `Ok(None)`: the policy does not ask for signatures.
/// `Err`: why the head is not trusted (journaled with the refusal).
pub fn check(
    repo: &git2::Repository,
    commit: &str,
    trust: &Trust,
) -> Result<Option<Signed>, String> {
    if !trust.require_signed_head {
        return Ok(None);
    }
    let short = &commit[..commit.len().min(12)];
    let oid = git2::Oid::from_str(commit).map_err(|e| format!("{commit}: {e}"))?;
    let (signature, data) = match repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(format!(
                "untrusted: {short} is not signed, and trust.requireSignedHead is set"
            ))
        }
        Err(e) => return Err(format!("cannot read the signature of {short}: {e}")),
    };
    let signature = std::str::from_utf8(&signature)
        .map_err(|_| format!("untrusted: the signature of {short} is not text"))?;
    if signature.contains("-----BEGIN SSH SIGNATURE-----") {
        ssh(signature, &data, trust)
            .map(Some)
            .map_err(|e| format!("untrusted: {short}: {e}"))
    } else if signature.contains("-----BEGIN PGP SIGNATURE-----") {
        openpgp(signature, &data, trust)
            .map(Some)
            .map_err(|e| format!("untrusted: {short}: {e}"))
    } else {
        Err(format!(
            "untrusted: {short} carries a signature that is neither SSH nor OpenPGP (X.509 is not supported)"
        ))
    }
}

fn ssh(signature: &str, data: &[u8], trust: &Trust) -> Result<Signed, String> {
    let sig = ssh_key::SshSig::from_pem(signature.trim())
        .map_err(|e| format!("the SSH signature does not parse: {e}"))?;
    let key_of_sig = sig.public_key();
    for signer in &trust.signers {
        let Some(listed) = &signer.ssh else { continue };
        let key = ssh_key::PublicKey::from_openssh(listed.trim()).map_err(|e| {
            format!(
                "trust.signers `{}`: the SSH key does not parse: {e}",
                signer.name
            )
        })?;
        if key.key_data() != key_of_sig {
            continue;
        }
        return match key.verify("git", data, &sig) {
            Ok(()) => Ok(Signed {
                signer: signer.name.clone(),
                kind: "ssh",
            }),
            Err(e) => Err(format!(
                "the SSH signature by {}'s key does not verify: {e}",
                signer.name
            )),
        };
    }
    let fingerprint = ssh_key::PublicKey::from(key_of_sig.clone())
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    Err(format!(
        "signed with SSH key {fingerprint}, which is not in trust.signers"
    ))
}

/// Upper-case hex without spaces: how fingerprints are compared.
fn normalise_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn openpgp(signature: &str, data: &[u8], trust: &Trust) -> Result<Signed, String> {
    let status = gpg_verify(signature, data)?;
    let mut fingerprints = Vec::new();
    let mut key_id = None;
    for line in status.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["[GNUPG:]", "BADSIG", id, ..] => {
                return Err(format!("the OpenPGP signature by key {id} is bad"))
            }
            ["[GNUPG:]", "REVKEYSIG", id, ..] => {
                return Err(format!("signed with OpenPGP key {id}, which is revoked"))
            }
            ["[GNUPG:]", "EXPKEYSIG", id, ..] => {
                return Err(format!("signed with OpenPGP key {id}, which has expired"))
            }
            ["[GNUPG:]", "EXPSIG", id, ..] => {
                return Err(format!("the OpenPGP signature by key {id} has expired"))
            }
            ["[GNUPG:]", "NO_PUBKEY", id, ..] => {
                return Err(format!(
                    "signed with OpenPGP key {id}, which is not in gpg's keyring (GNUPGHOME): import the signers' public keys"
                ))
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
            Some(id) => format!("gpg could not check the OpenPGP signature by key {id}"),
            None => "gpg did not report a valid OpenPGP signature".to_owned(),
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
    Err(format!(
        "signed with OpenPGP key {}, which is not in trust.signers",
        fingerprints.last().map(String::as_str).unwrap_or("?")
    ))
}

/// `gpg --verify` of a detached signature over `data`: its `--status-fd` lines. The
/// signature goes through a private temporary file, the data through stdin.
fn gpg_verify(signature: &str, data: &[u8]) -> Result<String, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path =
        std::env::temp_dir().join(format!("cacheflow-sig-{}-{nanos}.asc", std::process::id()));
    std::fs::write(&path, signature)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let result = (|| {
        let mut child = Command::new("gpg")
            .args(["--batch", "--no-tty", "--status-fd", "1", "--verify"])
            .arg(&path)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run gpg to check an OpenPGP signature: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(data)
                .map_err(|e| format!("cannot give gpg the signed data: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("gpg failed: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Check the shape of the listed keys when the settings are loaded: an SSH key that does
/// not parse, an OpenPGP fingerprint that is not 40 (v4) or 64 (v5/v6) hex digits.
pub fn check_signer_keys(ssh: Option<&str>, openpgp: Option<&str>) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some(key) = ssh {
        if let Err(e) = ssh_key::PublicKey::from_openssh(key.trim()) {
            problems.push((
                "ssh",
                format!("not an SSH public key (`ssh-ed25519 AAAA...`): {e}"),
            ));
        }
    }
    if let Some(f) = openpgp {
        let n = normalise_fingerprint(f);
        if !(n.len() == 40 || n.len() == 64) || !n.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push((
                "openpgp",
                format!("`{f}` is not an OpenPGP fingerprint (40 or 64 hex digits; a short key id is not enough)"),
            ));
        }
    }
    if ssh.is_none() && openpgp.is_none() {
        problems.push((
            "name",
            "a signer needs an `ssh` key or an `openpgp` fingerprint".to_owned(),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_checked_for_shape() {
        assert!(check_signer_keys(
            Some(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmxPkC7TaFmK618+0oReIfzHRY19lj/QQ5mBhtGGzVv"
            ),
            Some("0123 4567 89AB CDEF 0123  4567 89ab cdef 0123 4567")
        )
        .is_empty());
        let p = check_signer_keys(Some("ssh-ed25519 nope"), Some("DEADBEEF"));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "ssh");
        assert!(p[1].1.contains("a short key id is not enough"));
        assert_eq!(check_signer_keys(None, None)[0].0, "name");
    }

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
        assert_eq!(check(&repo, &id, &Trust::default()), Ok(None));
        let required = Trust {
            require_signed_head: true,
            signers: Vec::new(),
        };
        assert_eq!(
            check(&repo, &id, &required),
            Err(format!(
                "untrusted: {} is not signed, and trust.requireSignedHead is set",
                &id[..12]
            ))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
