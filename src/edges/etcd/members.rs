//! The live replicas: each keeps `<prefix>/replicas/<id>` (its advertised URL) bound to
//! a lease of its own, renewed every TTL/3. A replica that dies, freezes past its lease
//! or is cut off from etcd drops out of the list within the TTL; one stopped cleanly
//! revokes its lease and drops out at once. [`live`] reads the list.
//! The placement of shard leaders (`pure::shards::Leaders::place`) is computed over
//! these ids.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{EtcdClient, EtcdError, Op};

/// The folder of the membership keys.
pub fn members_prefix(prefix: &str) -> String {
    format!("{}/replicas/", prefix.trim_end_matches('/'))
}

/// One replica's membership key.
pub fn member_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", members_prefix(prefix))
}

/// This replica's membership, kept until `stop` turns true (then its lease is revoked:
/// the key goes at once). etcd unreachable: logged once per outage, tried again every
/// TTL/3, with a new lease when the old one expired meanwhile.
pub async fn keep_membership(
    client: Arc<EtcdClient>,
    key: String,
    url: String,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut lease: Option<i64> = None;
    let mut warned = false;
    loop {
        match renew(&client, &key, &url, ttl, &mut lease).await {
            Ok(()) => warned = false,
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot keep the membership key {key}: {e}; trying again");
                }
                warned = true;
            }
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            if let Some(id) = lease {
                let _ = tokio::time::timeout(Duration::from_secs(2), client.revoke(id)).await;
            }
            return;
        }
    }
}

/// Keep the lease alive (or get a new one), and the key on it: a key another process
/// put there (the same id given twice) is taken back, with a warning.
async fn renew(
    client: &EtcdClient,
    key: &str,
    url: &str,
    ttl: Duration,
    lease: &mut Option<i64>,
) -> Result<(), EtcdError> {
    if let Some(id) = *lease {
        if client.keepalive(id).await? <= 0 {
            *lease = None;
        }
    }
    let id = match *lease {
        Some(id) => id,
        None => client.grant(ttl).await?,
    };
    *lease = Some(id);
    match client.get(key).await? {
        Some(kv) if kv.lease == id => return Ok(()),
        Some(kv) if kv.value != url.as_bytes() => tracing::warn!(
            "the membership key {key} is also kept by {}: every replica needs its own --replica-id",
            String::from_utf8_lossy(&kv.value)
        ),
        _ => {}
    }
    client
        .txn(
            &[],
            &[Op::Put {
                key: key.to_owned(),
                value: url.as_bytes().to_vec(),
                lease: id,
            }],
        )
        .await?;
    Ok(())
}

/// The live replicas: their ids and advertised URLs, in id order.
pub async fn live(client: &EtcdClient, prefix: &str) -> Result<Vec<(String, String)>, EtcdError> {
    let folder = members_prefix(prefix);
    Ok(client
        .get_prefix(&folder)
        .await?
        .into_iter()
        .filter_map(|kv| {
            let id = kv.key.strip_prefix(&folder)?.to_owned();
            Some((id, String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_keys_live_in_one_folder_under_the_prefix() {
        assert_eq!(member_key("/cacheflow/", "r1"), "/cacheflow/replicas/r1");
        assert_eq!(members_prefix("/cacheflow"), "/cacheflow/replicas/");
    }
}
