//! Redis Sentinel: what the Sentinels a cluster names (`spec.sentinel`) say of its
//! primary (`SENTINEL GET-MASTER-ADDR-BY-NAME` and the flags of `SENTINEL MASTER`, asked
//! of every one of them at once), and a primary's failover through them (`SENTINEL
//! FAILOVER`), done when they name the new primary and it runs as one.
//!
//! Weighing the answers (a quorum, agreement, a failover in progress) is pure
//! (`pure::topology::sentinel_view`); this room only asks.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::redis::{config_map, split_address, sub_replicas, value_text, RedisDriver};
use super::NodeError;
use crate::pure::live::{same_address, SentinelAnswer};
use crate::pure::spec::model::Sentinel;

/// How often a failover through the Sentinels looks whether it is done.
const POLL: Duration = Duration::from_millis(100);

/// Every named Sentinel's answer about the primary of `sentinel.master_name`, asked at
/// once, each bounded by `timeout`; in the order the cluster names them.
pub async fn ask(sentinel: &Sentinel, timeout: Duration) -> Vec<SentinelAnswer> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, address) in sentinel.addresses.iter().enumerate() {
        let (address, sentinel) = (address.clone(), sentinel.clone());
        tasks.spawn(async move { (i, ask_one(address, sentinel, timeout).await) });
    }
    let mut answers: Vec<(usize, SentinelAnswer)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(answer) = done {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

async fn ask_one(address: String, sentinel: Sentinel, timeout: Duration) -> SentinelAnswer {
    let address = address.as_str();
    let d = RedisDriver::new(address, sentinel.auth.as_ref(), timeout);
    match read(&d, &sentinel.master_name).await {
        Ok((primary, failing_over)) => SentinelAnswer {
            address: address.to_owned(),
            primary: Some(primary),
            failing_over,
            error: None,
        },
        Err(e) => SentinelAnswer {
            address: address.to_owned(),
            primary: None,
            failing_over: false,
            error: Some(without_address(&e, address)),
        },
    }
}

/// The primary one Sentinel names (`host:port`) and whether it is failing it over.
async fn read(d: &RedisDriver, name: &str) -> Result<(String, bool), NodeError> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(name);
    let primary = match d.command(&cmd).await? {
        Ok(Value::Array(items)) if items.len() == 2 => {
            match (value_text(&items[0]), value_text(&items[1])) {
                (Some(host), Some(port)) => join(&host, &port),
                _ => return Err(d.protocol("GET-MASTER-ADDR-BY-NAME answered no address")),
            }
        }
        Ok(Value::Nil) | Ok(Value::Array(_)) => {
            return Err(d.protocol(format!("it watches no primary named {name}")))
        }
        Ok(other) => {
            return Err(d.protocol(format!(
                "GET-MASTER-ADDR-BY-NAME answered {}",
                value_text(&other).unwrap_or_else(|| "an unexpected reply".to_owned())
            )))
        }
        Err(e) => return Err(d.refused("SENTINEL GET-MASTER-ADDR-BY-NAME", e)),
    };
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("MASTER").arg(name);
    let fields = match d.command(&cmd).await? {
        Ok(v) => config_map(&v).map_err(|e| d.protocol(format!("SENTINEL MASTER: {e}")))?,
        Err(e) => return Err(d.refused("SENTINEL MASTER", e)),
    };
    Ok((primary, failing_over(&fields)))
}

/// A failover is running: `failover_in_progress` (or `promoted`, `reconf_*`) among the
/// flags.
fn failing_over(fields: &BTreeMap<String, String>) -> bool {
    fields.get("flags").is_some_and(|f| {
        f.split(',')
            .any(|flag| flag == "failover_in_progress" || flag.starts_with("reconf"))
    })
}

fn join(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A node error without the address in front (the answer carries it).
fn without_address(e: &NodeError, address: &str) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{address}: "))
        .map(str::to_owned)
        .unwrap_or(text)
}

/// Move the primary role away from `primary` through its Sentinels, without losing an
/// acknowledged write, and wait (at most `timeout`) until it is done. Its steps:
/// writes on the primary are paused (`CLIENT PAUSE … WRITE`) and its replicas catch up
/// to its offset, so no write is acknowledged that the new primary lacks; one Sentinel
/// is asked to `SENTINEL FAILOVER`; as soon as one names another node that runs as a
/// primary, the old primary follows it (what the Sentinels would make it do seconds
/// later) and its writes are let go (they are refused there now: clients move on); done
/// when a quorum of Sentinels, every one that answers agreeing and none failing over,
/// names that node. The new primary's address.
pub async fn failover(
    primary: &RedisDriver,
    sentinel: &Sentinel,
    timeout: Duration,
) -> Result<String, NodeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    // The Sentinels moved the role already and have not turned this node into a
    // replica yet: it follows their primary now (what they would make it do).
    let answers = ask(sentinel, primary.timeout()).await;
    if let Some(to) = agreed_elsewhere(sentinel, &answers, primary.address_text()) {
        follow_new_primary(primary, &to).await?;
        linked(primary, &to, deadline).await?;
        return Ok(to);
    }
    pause_writes(primary, timeout).await?;
    let promoted: Result<String, NodeError> = async {
        caught_up(primary, deadline).await?;
        ask_to_fail_over(primary, sentinel).await?;
        let to = wait_for(primary, sentinel, deadline, None).await?;
        follow_new_primary(primary, &to).await?;
        Ok(to)
    }
    .await;
    let mut unpause = redis::cmd("CLIENT");
    unpause.arg("UNPAUSE");
    let _ = primary.command(&unpause).await;
    let to = promoted?;
    wait_for(primary, sentinel, deadline, Some(&to)).await
}

/// The primary a quorum of Sentinels names, every one that answers agreeing and none
/// failing over, when it is not `from`.
fn agreed_elsewhere(sentinel: &Sentinel, answers: &[SentinelAnswer], from: &str) -> Option<String> {
    let named: Vec<&str> = answers
        .iter()
        .filter(|a| a.error.is_none())
        .filter_map(|a| a.primary.as_deref())
        .collect();
    let first = *named.first()?;
    let agreed = named.len() >= sentinel.quorum()
        && !answers.iter().any(|a| a.failing_over)
        && named.iter().all(|p| same_address(p, first));
    (agreed && !same_address(first, from)).then(|| first.to_owned())
}

/// Wait until `node` follows `to` with its link up.
async fn linked(
    node: &RedisDriver,
    to: &str,
    deadline: tokio::time::Instant,
) -> Result<(), NodeError> {
    let (_, port) = split_address(to);
    loop {
        let info = node.replication().await?;
        let up = info.get("role").map(String::as_str) == Some("slave")
            && info.get("master_port").map(String::as_str) == Some(port.to_string().as_str())
            && info.get("master_link_status").map(String::as_str) == Some("up");
        if up {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(node.protocol(format!(
                "it does not follow {to} with its link up in time (link {})",
                info.get("master_link_status")
                    .map(String::as_str)
                    .unwrap_or("unknown")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn pause_writes(primary: &RedisDriver, timeout: Duration) -> Result<(), NodeError> {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("PAUSE")
        .arg(timeout.as_millis().min(u64::MAX as u128) as u64)
        .arg("WRITE");
    match primary.command(&cmd).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(primary.refused("CLIENT PAUSE", e)),
    }
}

/// Every replica the primary feeds acknowledged its offset (writes are paused).
async fn caught_up(primary: &RedisDriver, deadline: tokio::time::Instant) -> Result<(), NodeError> {
    loop {
        let info = primary.replication().await?;
        let offset: u64 = info
            .get("master_repl_offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let behind: Vec<String> = info
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()))
            .filter(|(_, v)| {
                let acked = v
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("offset="))
                    .and_then(|o| o.parse::<u64>().ok())
                    .unwrap_or(0);
                acked < offset
            })
            .map(|(_, v)| v.clone())
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(primary.protocol(format!(
                "its replicas did not catch up to offset {offset} before the failover: {}",
                behind.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `SENTINEL FAILOVER` to the first named Sentinel that takes it (one already in
/// progress counts as taken).
async fn ask_to_fail_over(primary: &RedisDriver, sentinel: &Sentinel) -> Result<(), NodeError> {
    let mut refusals = Vec::new();
    for address in &sentinel.addresses {
        let d = RedisDriver::new(address, sentinel.auth.as_ref(), primary.timeout());
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("FAILOVER").arg(&sentinel.master_name);
        super::fence::check(super::NodeDriver::address(primary))?;
        match d.command(&cmd).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.starts_with("INPROG") => return Ok(()),
            Ok(Err(e)) => refusals.push(format!("{address}: {e}")),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    Err(primary.refused(
        "SENTINEL FAILOVER",
        format!("no Sentinel took it: {}", refusals.join("; ")),
    ))
}

/// Wait until the Sentinels name a primary other than `primary` that reports role
/// master: one of them is enough (`agreed: None`), or (`Some(to)`) a quorum, all that
/// answer naming `to` and none failing over.
async fn wait_for(
    primary: &RedisDriver,
    sentinel: &Sentinel,
    deadline: tokio::time::Instant,
    agreed: Option<&str>,
) -> Result<String, NodeError> {
    let from = primary.address_text().to_owned();
    loop {
        let answers = ask(sentinel, primary.timeout()).await;
        let named: Vec<&str> = answers
            .iter()
            .filter(|a| a.error.is_none())
            .filter_map(|a| a.primary.as_deref())
            .collect();
        let candidate = match agreed {
            None => named.iter().find(|p| !same_address(p, &from)).copied(),
            Some(to) => {
                let settled = named.len() >= sentinel.quorum()
                    && !answers.iter().any(|a| a.failing_over)
                    && named.iter().all(|p| same_address(p, to));
                settled.then_some(to)
            }
        };
        if let Some(to) = candidate {
            let node =
                RedisDriver::new(to, primary.auth(), primary.timeout()).with_tls(primary.tls());
            let leads = node
                .replication()
                .await
                .is_ok_and(|i| i.get("role").map(String::as_str) == Some("master"));
            if leads {
                return Ok(to.to_owned());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let said: Vec<String> = answers
                .iter()
                .map(|a| match (&a.primary, &a.error) {
                    (_, Some(e)) => format!("{}: {e}", a.address),
                    (Some(p), None) if a.failing_over => {
                        format!("{} names {p}, failing over", a.address)
                    }
                    (Some(p), None) => format!("{} names {p}", a.address),
                    (None, None) => format!("{}: no answer", a.address),
                })
                .collect();
            return Err(primary.protocol(format!(
                "the Sentinels of {} did not {} in time: {}",
                sentinel.master_name,
                match agreed {
                    None => "name a new primary".to_owned(),
                    Some(to) => format!("agree on the new primary {to}"),
                },
                said.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The old primary, and the replicas it still feeds, follow the new one (each
/// persisted with `CONFIG REWRITE`): what the Sentinels do too, only later.
async fn follow_new_primary(primary: &RedisDriver, to: &str) -> Result<(), NodeError> {
    let (host, port) = split_address(to);
    let info = primary.replication().await?;
    if info.get("role").map(String::as_str) == Some("master") {
        primary.follow(&host, port).await?;
    }
    for other in sub_replicas(&info) {
        if same_address(&other, to) {
            continue;
        }
        let r = RedisDriver::new(&other, primary.auth(), primary.timeout()).with_tls(primary.tls());
        if let Err(e) = r.follow(&host, port).await {
            tracing::warn!(
                "after the failover to {to}: {other} still follows {}: {e}",
                primary.address_text()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_in_progress_is_read_from_the_flags() {
        let f = |flags: &str| {
            failing_over(
                &[("flags".to_owned(), flags.to_owned())]
                    .into_iter()
                    .collect(),
            )
        };
        assert!(!f("master"));
        assert!(f("master,failover_in_progress"));
        assert!(!f("s_down,master"));
        assert_eq!(join("::1", "26379"), "[::1]:26379");
    }
}
