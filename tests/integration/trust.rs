//! Commit trust through `cacheflow sync`: heads signed with real SSH keys (`ssh-keygen`,
//! `git commit -S` with `gpg.format=ssh`) and real OpenPGP keys (`gpg` in a private
//! GNUPGHOME), checked against `trust.signers`; six real redis-server nodes whose values
//! are read back to show that nothing from an untrusted head was applied.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cacheflow_sync;
use crate::support::fleet::Fleet;
use crate::support::git::{journal_messages, TestRepo};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh ed25519 key pair; the public key line.
fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path));
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("the public key");
    (path, public.trim().to_owned())
}

/// A fresh OpenPGP signing key in `home`; its fingerprint.
fn gpg_key(home: &Path, uid: &str) -> String {
    run(Command::new("gpg").env("GNUPGHOME", home).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "never",
    ]));
    let listing = run(Command::new("gpg").env("GNUPGHOME", home).args([
        "--batch",
        "--with-colons",
        "--list-keys",
        uid,
    ]));
    listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("a fingerprint")
        .to_owned()
}

/// Commit everything with the git CLI, signed as `sign` says.
enum Sign<'a> {
    No,
    Ssh(&'a Path),
    OpenPgp(&'a str),
}

fn commit(repo: &TestRepo, gnupghome: &Path, message: &str, sign: Sign) -> String {
    let git = || {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(repo.path())
            .env("GNUPGHOME", gnupghome)
            .args([
                "-c",
                "user.name=cacheflow tests",
                "-c",
                "user.email=tests@cacheflow.invalid",
            ]);
        c
    };
    run(git().args(["add", "-A"]));
    let mut c = git();
    match sign {
        Sign::No => c.args(["commit", "-q", "--no-gpg-sign", "-m", message]),
        Sign::Ssh(key) => c
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", key.display()))
            .args(["commit", "-q", "-S", "-m", message]),
        Sign::OpenPgp(fpr) => c
            .args(["-c", "gpg.format=openpgp", "-c"])
            .arg(format!("user.signingkey={fpr}"))
            .args(["commit", "-q", "-S", "-m", message]),
    };
    run(&mut c);
    run(git().args(["rev-parse", "HEAD"])).trim().to_owned()
}

fn settings(require: bool, signers: &str) -> String {
    format!(
        "apiVersion: cacheflow/v1
kind: Settings
metadata: {{name: settings}}
spec:
  trust:
    requireSignedHead: {require}
    signers:
{signers}"
    )
}

fn sync(repo: &TestRepo, gnupghome: &Path) -> (i32, String) {
    cacheflow_sync(repo.path(), &["--yes"], &[("GNUPGHOME", gnupghome)])
}

fn hz(fleet: &Fleet) -> Vec<String> {
    let mut v: Vec<String> = fleet.config("hz").into_iter().map(|(_, v)| v).collect();
    v.dedup();
    v
}

#[test]
fn only_heads_signed_by_a_listed_ssh_or_openpgp_key_are_applied() {
    let keys = tempfile::tempdir().expect("a key directory");
    let gnupghome = keys.path().join("gnupg");
    std::fs::create_dir(&gnupghome).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupghome, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (alice_key, alice_pub) = ssh_key(keys.path(), "alice");
    let (mallory_key, _) = ssh_key(keys.path(), "mallory");
    let carol = gpg_key(&gnupghome, "Carol <carol@cacheflow.invalid>");
    let dave = gpg_key(&gnupghome, "Dave <dave@cacheflow.invalid>");

    let fleet = Fleet::start();
    let repo = TestRepo::new();
    let alice = format!("      - {{name: alice, ssh: '{alice_pub}'}}\n");
    repo.write("cacheflow.yaml", &settings(true, &alice));
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));

    // Unsigned: refused, journaled, nothing applied.
    let unsigned = commit(&repo, &gnupghome, "hz 20, unsigned", Sign::No);
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 1, "{out}");
    let why = format!(
        "untrusted: {} is not signed, and trust.requireSignedHead is set",
        &unsigned[..12]
    );
    assert!(out.contains(&why), "{out}");
    assert_eq!(hz(&fleet), ["10"]);
    assert!(
        journal_messages(repo.repository())
            .iter()
            .any(|m| m.contains(&format!("revision {} refused: {why}", &unsigned[..12]))),
        "the refusal is journaled"
    );

    // Signed by alice's SSH key: applied on every node.
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 21"));
    commit(
        &repo,
        &gnupghome,
        "hz 21, signed by alice",
        Sign::Ssh(&alice_key),
    );
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&fleet), ["21"]);

    // Signed by a key that is not listed: refused with its fingerprint.
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 22"));
    let by_mallory = commit(&repo, &gnupghome, "hz 22, mallory", Sign::Ssh(&mallory_key));
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "untrusted: {}: signed with SSH key SHA256:",
            &by_mallory[..12]
        )) && out.contains("which is not in trust.signers"),
        "{out}"
    );
    assert_eq!(hz(&fleet), ["21"]);

    // An unsigned head cannot switch the check off for itself: the policy that judges
    // it is the last taken revision's.
    repo.write("cacheflow.yaml", &settings(false, &alice));
    commit(&repo, &gnupghome, "trust off, unsigned", Sign::No);
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not signed"), "{out}");
    assert_eq!(hz(&fleet), ["21"]);

    // Alice adds Carol's OpenPGP key (signed by alice); then Carol's gpg-signed commit
    // is applied, and one signed by Dave (in the keyring, not listed) is refused.
    let both = format!("{alice}      - {{name: carol, openpgp: '{carol}'}}\n");
    repo.write("cacheflow.yaml", &settings(true, &both));
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 23"));
    commit(&repo, &gnupghome, "add carol, hz 23", Sign::Ssh(&alice_key));
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&fleet), ["23"]);

    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 24"));
    commit(&repo, &gnupghome, "hz 24 by carol", Sign::OpenPgp(&carol));
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&fleet), ["24"]);

    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 25"));
    commit(&repo, &gnupghome, "hz 25 by dave", Sign::OpenPgp(&dave));
    let (code, out) = sync(&repo, &gnupghome);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "signed with OpenPGP key {dave}, which is not in trust.signers"
        )),
        "{out}"
    );
    assert_eq!(hz(&fleet), ["24"]);
}
