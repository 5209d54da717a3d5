//! `runledger cluster adopt`: a single-node data dir becomes the start of a cluster. The data
//! dir records an adoption id, the stream is created naming the same id, and the data dir's
//! organizations and clients are published on the credentials subject (so that gateways know
//! them too). Every node then starts from a copy of the adopted data dir (`runledger backup`)
//! and applies the stream on top of it: organizations keep their output keys (sealed under the
//! master key every node shares), clients their secrets, and issued tokens stay valid.

use std::path::Path;
use std::process::ExitCode;

use super::NatsArgs;
use crate::cluster::Publisher;
use crate::cluster::envelope::{Kind, WriterId};
use crate::cluster::log::CREDENTIALS_SUBJECT;
use crate::crypto::{MASTER_KEY_FILE, MasterKey};
use crate::store::{Store, StoreOptions, WriteOp};

/// Credentials published in one message at most.
const OPS_PER_MESSAGE: usize = 1_000;
/// How long each message may take to be confirmed.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn adopt(
    nats: &NatsArgs,
    data_dir: &Path,
    replicas: Option<u8>,
) -> Result<ExitCode, String> {
    let database = data_dir.join(crate::store::DATABASE_FILE);
    if !database.exists() {
        return Err(format!("there is no database at {}", database.display()));
    }
    // The single node's own key file is the default: its organizations' keys are sealed with it.
    let own_key = data_dir.join(MASTER_KEY_FILE);
    let key_file = nats
        .master_key_file
        .clone()
        .or_else(|| own_key.exists().then_some(own_key));
    let master = MasterKey::given(key_file.as_deref())?.ok_or_else(|| {
        format!(
            "give the master key the single node used: --master-key-file {} (or RUNLEDGER_MASTER_KEY)",
            data_dir.join(MASTER_KEY_FILE).display()
        )
    })?;
    let store = Store::open(data_dir, StoreOptions::default()).map_err(|e| match e {
        crate::store::OpenError::InUse(_) => format!(
            "{} is in use: stop the server that has it open, then adopt it",
            data_dir.display()
        ),
        other => other.to_string(),
    })?;
    let (organizations, clients) = {
        let reader = store.reader().map_err(|e| e.to_string())?;
        let organizations = reader.organizations().map_err(|e| e.to_string())?;
        (organizations, reader.clients().map_err(|e| e.to_string())?)
    };
    for (org, record) in &organizations {
        master.open_org_key(*org, &record.sealed_key).map_err(|_| {
            format!("organization {org}'s key does not open with this master key: give the one the single node used")
        })?;
    }
    let own = crate::cluster::StartingPoint::of(&store)
        .map_err(|e| e.to_string())?
        .baseline;
    let log = nats.connect().await?;
    let (baseline, identity) = match log.identity().await.map_err(|e| e.to_string())? {
        Some(identity) if own.is_some() && identity.adopted == own => {
            // An adoption interrupted after creating the stream: finish it.
            (identity.adopted.expect("checked"), identity)
        }
        Some(_) => {
            return Err(format!(
                "the stream {} exists already: a store is adopted into a new cluster only, before any node or `cluster init` made the stream",
                crate::cluster::log::STREAM
            ));
        }
        None => {
            let baseline = store.adopt().map_err(|e| e.to_string())?;
            let identity = crate::cluster::StreamIdentity::new(&master, Some(baseline));
            let (_, identity) = log
                .init(replicas.map(usize::from), &identity)
                .await
                .map_err(|e| e.to_string())?;
            crate::cluster::lease::ensure(&log)
                .await
                .map_err(|e| e.to_string())?;
            (baseline, identity)
        }
    };
    let key = identity.key(&master).map_err(|e| e.to_string())?;
    let ops: Vec<WriteOp> = organizations
        .into_iter()
        .map(|(org, record)| WriteOp::CreateOrganization { org, record })
        .chain(
            clients
                .into_iter()
                .map(|(client_id, record)| WriteOp::CreateClient { client_id, record }),
        )
        .collect();
    // A writer of its own, named by the adoption: a rerun sends the same numbered messages,
    // which every node applies once.
    let publisher = Publisher::spawn_as(
        WriterId(*baseline.as_bytes()),
        log.clone(),
        key,
        CREDENTIALS_SUBJECT,
        None,
    );
    let mut last_seq = 0;
    for ops in ops.chunks(OPS_PER_MESSAGE) {
        let body = crate::cluster::codec::encode(ops).map_err(|e| e.to_string())?;
        last_seq = publisher
            .publish(Kind::Operations, body, PUBLISH_WAIT)
            .await
            .map_err(|e| e.to_string())?;
    }
    publisher
        .finish(PUBLISH_WAIT)
        .await
        .map_err(|e| e.to_string())?;
    let state = log.state().await.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({
            "baseline": baseline.to_string(),
            "stream": crate::cluster::log::STREAM,
            "credentials_published": ops.len(),
            "last_seq": last_seq.max(state.last_seq),
        })
    );
    eprintln!(
        "adopted {}: start every node from a copy of it (`runledger backup --data-dir {} NODE_DIR` makes one; serve NODE_DIR) with this master key; a node whose data dir is not such a copy refuses to start, since the stream does not hold this store's history",
        data_dir.display(),
        data_dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}
