//! Which credential git is given for a remote, and from where: never from a command
//! line. Those in the URL come first (libgit2 uses them without asking; they show in
//! `ps`, so the token file is the better place), then for https a token read from the
//! file `CACHEFLOW_GIT_TOKEN_FILE` names, then git's credential helpers; for ssh the
//! agent and the usual key files. Bounded, because libgit2 asks again after every
//! rejection. The token is read at each fetch (a rotated file is picked up) and never
//! written anywhere: errors name the file, not its content.

use std::path::{Path, PathBuf};

/// The environment variable naming the token file.
pub const TOKEN_FILE_VAR: &str = "CACHEFLOW_GIT_TOKEN_FILE";

/// The user name sent with the token when the URL names none: GitHub's name for a
/// token; GitLab and Gitea accept any name with a personal access token.
pub const TOKEN_USER: &str = "x-access-token";

/// What to answer libgit2's `attempt`-th request for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The user name alone (ssh asks for it first).
    Username,
    SshAgent,
    SshKey(PathBuf),
    /// The token of the token file, as the password of HTTP basic authentication.
    Token,
    /// git's credential helpers (`credential.helper`).
    Helper,
    /// Nothing more to try.
    GiveUp,
}

/// The answer to the `attempt`-th request (1: the first), given what the remote allows,
/// whether a token file is set, and the home directory.
pub fn choose(
    attempt: usize,
    allowed: git2::CredentialType,
    token: bool,
    home: Option<&Path>,
) -> Choice {
    use git2::CredentialType as T;
    if allowed.contains(T::USERNAME) && attempt <= 1 {
        return Choice::Username;
    }
    if allowed.contains(T::SSH_KEY) {
        match (attempt, home) {
            (1 | 2, _) => return Choice::SshAgent,
            (3, Some(h)) => return Choice::SshKey(h.join(".ssh/id_ed25519")),
            (4, Some(h)) => return Choice::SshKey(h.join(".ssh/id_rsa")),
            _ => {}
        }
    }
    if allowed.contains(T::USER_PASS_PLAINTEXT) {
        match (attempt, token) {
            (1, true) => return Choice::Token,
            (1 | 2, false) => return Choice::Helper,
            _ => {}
        }
    }
    Choice::GiveUp
}

/// The token file's path, when `CACHEFLOW_GIT_TOKEN_FILE` is set.
pub fn token_file() -> Option<PathBuf> {
    std::env::var_os(TOKEN_FILE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The token in `path`, its surrounding white space trimmed. The error names the file
/// and what is wrong, never the content; text, because it goes back to libgit2 as the
/// credential callback's error (`git2::Error::from_str`).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the git token file {} ({TOKEN_FILE_VAR}): {e}",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(['\n', '\r']) {
        return Err(format!(
            "the git token file {} ({TOKEN_FILE_VAR}) must hold one token on one line",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// libgit2's callbacks with the credential choice above.
pub fn callbacks<'a>() -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    let mut attempts = 0usize;
    let token_path = token_file();
    cb.credentials(move |url, username, allowed| {
        attempts += 1;
        let user = username.unwrap_or("git");
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match choose(attempts, allowed, token_path.is_some(), home.as_deref()) {
            Choice::Username => git2::Cred::username(user),
            Choice::SshAgent => git2::Cred::ssh_key_from_agent(user),
            Choice::SshKey(key) => git2::Cred::ssh_key(user, None, &key, None),
            Choice::Token => {
                let path = token_path.as_deref().unwrap_or(Path::new(""));
                let token = read_token(path).map_err(|e| git2::Error::from_str(&e))?;
                git2::Cred::userpass_plaintext(username.unwrap_or(TOKEN_USER), &token)
            }
            Choice::Helper => {
                let config = git2::Config::open_default()?;
                git2::Cred::credential_helper(&config, url, username)
            }
            Choice::GiveUp => Err(git2::Error::from_str(if token_path.is_some() {
                "authentication failed (with the token of the git token file)"
            } else {
                "authentication failed"
            })),
        }
    });
    cb
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::CredentialType as T;

    #[test]
    fn https_uses_the_token_file_first_then_nothing_more() {
        assert_eq!(choose(1, T::USER_PASS_PLAINTEXT, true, None), Choice::Token);
        assert_eq!(
            choose(2, T::USER_PASS_PLAINTEXT, true, None),
            Choice::GiveUp
        );
    }

    #[test]
    fn https_without_a_token_file_asks_the_credential_helpers_twice() {
        assert_eq!(
            choose(1, T::USER_PASS_PLAINTEXT, false, None),
            Choice::Helper
        );
        assert_eq!(
            choose(2, T::USER_PASS_PLAINTEXT, false, None),
            Choice::Helper
        );
        assert_eq!(
            choose(3, T::USER_PASS_PLAINTEXT, false, None),
            Choice::GiveUp
        );
    }

    #[test]
    fn ssh_uses_the_agent_then_the_key_files_never_the_token() {
        let home = Path::new("/home/ops");
        assert_eq!(choose(1, T::USERNAME, true, Some(home)), Choice::Username);
        assert_eq!(choose(2, T::SSH_KEY, true, Some(home)), Choice::SshAgent);
        assert_eq!(
            choose(3, T::SSH_KEY, true, Some(home)),
            Choice::SshKey(home.join(".ssh/id_ed25519"))
        );
        assert_eq!(
            choose(4, T::SSH_KEY, true, Some(home)),
            Choice::SshKey(home.join(".ssh/id_rsa"))
        );
        assert_eq!(choose(5, T::SSH_KEY, true, Some(home)), Choice::GiveUp);
    }

    #[test]
    fn the_token_is_read_trimmed_and_errors_never_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "ghp_secretvalue123\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "ghp_secretvalue123");
        std::fs::write(&path, "ghp_secretvalue123\nsecond line\n").unwrap();
        let err = read_token(&path).unwrap_err();
        assert!(!err.contains("ghp_secretvalue123"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        let err = read_token(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("cannot read the git token file"), "{err}");
    }
}
