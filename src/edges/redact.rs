//! Credentials out of text: every URL shown in a log, an error, the status or Git goes
//! through [`redact_url`] first (Flux's `SanitizeError`).

/// Remove `user:password@` (or a bare token `user@`) from every URL in `text`, so a
/// URL or an error message that quotes one can be logged. An ssh user without a
/// password (`ssh://git@host`, `git@host:path`) is not a secret and stays.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let scheme = &rest[scheme_start..i];
        let after = i + 3;
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let ssh = scheme.eq_ignore_ascii_case("ssh") || scheme.ends_with("+ssh");
                if ssh && !userinfo.contains(':') {
                    out.push_str(authority);
                } else {
                    out.push_str(&authority[at + 1..]);
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_strips_user_and_password_wherever_a_url_appears() {
        assert_eq!(
            redact_url("https://user:pa55@git.example.com/a.git"),
            "https://git.example.com/a.git"
        );
        assert_eq!(
            redact_url("https://ghp_TOKEN@github.com/o/r"),
            "https://github.com/o/r"
        );
        assert_eq!(
            redact_url("failed to fetch 'http://u:p@h:8080/x' and https://a:b@c"),
            "failed to fetch 'http://h:8080/x' and https://c"
        );
        assert_eq!(redact_url("ssh://git@host/r.git"), "ssh://git@host/r.git");
        assert_eq!(redact_url("ssh://git:pw@host/r.git"), "ssh://host/r.git");
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(redact_url("no url here"), "no url here");
    }
}
