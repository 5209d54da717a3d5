//! `runledger cluster init|adopt|status|trim|skip`: the cluster's log on NATS JetStream.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::NatsArgs;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create the stream (replicas 3 on a NATS cluster of 3 or more servers, else 1) and print
    /// the first OAuth client's credentials as JSON; does nothing when the stream exists.
    Init {
        #[command(flatten)]
        nats: NatsArgs,
        /// Stream replicas, instead of the default.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
    },
    /// Make a single-node data dir the start of a new cluster: create the stream naming it and
    /// publish its organizations and clients; then start every node from a copy of it (its
    /// history, keys, clients and tokens carry over). Stop the single node first.
    Adopt {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        data_dir: super::DataDir,
        /// Stream replicas, instead of the default.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
    },
    /// Print the stream's first and last sequence, messages and bytes, the cluster's id and
    /// the adoption it continues (`null` for a stream `cluster init` made), as JSON.
    Status {
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Let every node pass over stream sequences it cannot apply or that are missing (deleted
    /// from the stream, or trimmed below it): what they held is lost on the nodes that had not
    /// applied them yet. A node stalled there goes on at once.
    Skip {
        #[command(flatten)]
        nats: NatsArgs,
        /// The sequence, or an inclusive range `FIRST..LAST`.
        sequences: String,
    },
    /// Delete the stream's messages that every node and the newest backup hold already: below
    /// the lowest of the nodes' applied sequences and the backup's.
    Trim {
        #[command(flatten)]
        nats: NatsArgs,
        /// Every live node's REST address (`http://host:port`), repeated.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The newest backup (a directory `runledger backup` wrote), which a wiped node would be
        /// rebuilt from.
        #[arg(long)]
        backup: PathBuf,
    },
}

pub fn run(args: ClusterArgs) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        match args.command {
            ClusterCommand::Init { nats, replicas } => init(&nats, replicas).await,
            ClusterCommand::Adopt {
                nats,
                data_dir,
                replicas,
            } => super::adopt::adopt(&nats, &data_dir.data_dir, replicas).await,
            ClusterCommand::Status { nats } => {
                let log = nats.connect().await?;
                let state = log.state().await.map_err(|e| e.to_string())?;
                let identity = log
                    .identity()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("there is no stream: make it with `runledger cluster init`")?;
                println!(
                    "{}",
                    serde_json::json!({
                        "first_seq": state.first_seq,
                        "last_seq": state.last_seq,
                        "messages": state.messages,
                        "bytes": state.bytes,
                        "cluster": identity.cluster.to_string(),
                        "adopted": identity.adopted.map(|id| id.to_string()),
                    })
                );
                Ok(ExitCode::SUCCESS)
            }
            ClusterCommand::Skip { nats, sequences } => skip(&nats, &sequences).await,
            ClusterCommand::Trim {
                nats,
                nodes,
                backup,
            } => trim(&nats, &nodes, &backup).await,
        }
    })
}

async fn init(nats: &NatsArgs, replicas: Option<u8>) -> Result<ExitCode, String> {
    let master = nats.master()?;
    let log = nats.connect().await?;
    let identity = crate::cluster::StreamIdentity::new(&master, None);
    let (outcome, identity) = log
        .init(replicas.map(usize::from), &identity)
        .await
        .map_err(|e| e.to_string())?;
    crate::cluster::lease::ensure(&log)
        .await
        .map_err(|e| e.to_string())?;
    if !outcome.created {
        eprintln!(
            "the stream {} exists already (replicas {}); nothing to do",
            crate::cluster::log::STREAM,
            outcome.replicas
        );
        return Ok(ExitCode::SUCCESS);
    }
    let key = identity.key(&master).map_err(|e| e.to_string())?;
    let (client, _) =
        super::client::create_in_cluster(&log, &key, &master, None, crate::auth::Scopes::all())
            .await
            .map_err(|e| format!("cannot create the first client: {e}"))?;
    eprintln!(
        "created the stream {} (replicas {}) and an OAuth client with every scope in organization {}; its secret is shown only now:",
        crate::cluster::log::STREAM,
        outcome.replicas,
        client.organization
    );
    println!("{}", super::client::credentials_json(&client));
    Ok(ExitCode::SUCCESS)
}

async fn skip(nats: &NatsArgs, sequences: &str) -> Result<ExitCode, String> {
    let bad = || format!("{sequences:?}: give a stream sequence or a range FIRST..LAST");
    let parse = |text: &str| text.trim().parse::<u64>().ok().filter(|seq| *seq > 0);
    let (first, last) = match sequences.split_once("..") {
        Some((first, last)) => (parse(first).ok_or_else(bad)?, parse(last).ok_or_else(bad)?),
        None => {
            let seq = parse(sequences).ok_or_else(bad)?;
            (seq, seq)
        }
    };
    if last < first {
        return Err(bad());
    }
    let cluster = nats.join().await?;
    let state = cluster.log.state().await.map_err(|e| e.to_string())?;
    if last > state.last_seq {
        return Err(format!(
            "the stream ends at sequence {}: there is nothing to pass over after it",
            state.last_seq
        ));
    }
    let body = crate::cluster::envelope::pass_over_body(first, last);
    let publisher = crate::cluster::Publisher::spawn(
        cluster.log.clone(),
        cluster.key.clone(),
        crate::cluster::log::CONTROL_SUBJECT,
        None,
    );
    let wait = Duration::from_secs(60);
    let seq = publisher
        .publish(crate::cluster::envelope::Kind::PassOver, body, wait)
        .await
        .map_err(|e| e.to_string())?;
    publisher.finish(wait).await.map_err(|e| e.to_string())?;
    println!(
        "nodes may pass over sequences {first} to {last} (permission at sequence {seq}): a node stalled there records them as skipped and goes on; what they held is lost where it was not applied yet"
    );
    Ok(ExitCode::SUCCESS)
}

async fn trim(nats: &NatsArgs, nodes: &[String], backup: &Path) -> Result<ExitCode, String> {
    let backup_seq = {
        let options = crate::store::StoreOptions {
            read_only: true,
            ..Default::default()
        };
        let store =
            crate::store::Store::open(backup, options).map_err(|e| format!("the backup: {e}"))?;
        let seq = store
            .reader()
            .and_then(|reader| reader.applied_seq())
            .map_err(|e| format!("the backup: {e}"))?;
        if seq == 0 {
            return Err(format!(
                "the backup in {} holds no stream sequence: it is not a backup of a cluster node",
                backup.display()
            ));
        }
        seq
    };
    let mut lowest = backup_seq;
    for node in nodes {
        let applied = applied_seq_of(node).await?;
        println!("node {node} applied through {applied}");
        lowest = lowest.min(applied);
    }
    println!("backup {} holds through {backup_seq}", backup.display());
    let log = nats.connect().await?;
    let trimmed = log.trim(lowest + 1).await.map_err(|e| e.to_string())?;
    println!("trimmed {trimmed} messages below sequence {}", lowest + 1);
    Ok(ExitCode::SUCCESS)
}

/// A node's applied sequence, from the `x-runledger-applied-seq` header of its `/healthz`.
async fn applied_seq_of(node: &str) -> Result<u64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = node
        .strip_prefix("http://")
        .unwrap_or(node)
        .trim_end_matches('/');
    let fail = |e: &dyn std::fmt::Display| format!("cannot ask node {node}: {e}");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|e| fail(&e))?
    .map_err(|e| fail(&e))?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(&e))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
    let text = String::from_utf8_lossy(&response);
    text.lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(crate::api::sequences::APPLIED_SEQ)
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| {
            format!("node {node} did not say its applied sequence (is it a cluster node?)")
        })
}
