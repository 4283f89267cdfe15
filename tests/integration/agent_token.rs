//! `cacheflow agent-token` through the real binary: the token is the HMAC the server
//! will check, and the secret only comes from a file or the environment.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cacheflow"));
    cmd.args(args).env_remove("CACHEFLOW_NODE_TOKEN_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the cacheflow binary runs")
}

#[test]
fn agent_token_prints_the_hmac_of_the_node_id_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "abcdefghijklmnopqrstuvwxyz012345\n").unwrap();
    let out = run(
        &["agent-token", "n1", "--secret-file", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    // HMAC-SHA256("cacheflow node token v1\0" + "n1"), computed with Python's hmac.
    let expected = "cf1.2f0808be261ca1b66686b011d78da0d0a310e43e89319ebf616e8b05f3ee05ab\n";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let out = run(
        &["agent-token", "n1"],
        &[(
            "CACHEFLOW_NODE_TOKEN_SECRET",
            "abcdefghijklmnopqrstuvwxyz012345",
        )],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert!(cacheflow::pure::identity::verify(
        b"abcdefghijklmnopqrstuvwxyz012345",
        "n1",
        expected.trim()
    ));
}

#[test]
fn agent_token_refuses_a_missing_or_short_secret() {
    let out = run(&["agent-token", "n1"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no node-token secret: give --secret-file FILE or set CACHEFLOW_NODE_TOKEN_SECRET\n"
    );
    let out = run(
        &["agent-token", "n1"],
        &[("CACHEFLOW_NODE_TOKEN_SECRET", "short")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: the node-token secret is 5 bytes; use at least 16 random bytes\n"
    );
}

#[test]
fn agent_token_refuses_an_id_no_cluster_could_declare() {
    for id in ["Node_1", "n1_", "n1.example", "n1-"] {
        let out = run(
            &["agent-token", id],
            &[(
                "CACHEFLOW_NODE_TOKEN_SECRET",
                "abcdefghijklmnopqrstuvwxyz012345",
            )],
        );
        assert_eq!(out.status.code(), Some(1), "{id}");
        assert!(out.stdout.is_empty(), "{id}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("error: `{id}` is no node id a cluster can declare: lower-case letters, digits and dashes, 1 to 63 characters, starting and ending with a letter or digit\n")
        );
    }
}
