//! `runledger client create|list|revoke`: the operator's management of OAuth clients, and the
//! printing of new credentials (also used by the first start of `serve` and by `demo`).

use std::process::ExitCode;

use serde_json::json;
use uuid::Uuid;

use super::DataDir;
use crate::auth::{Scope, Scopes};
use crate::engine::{Engine, NewClient};
use crate::model::OrgId;
use crate::time::format_rfc3339;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create an OAuth client; prints its credentials (the secret is shown only now) as JSON.
    Create {
        #[command(flatten)]
        data_dir: DataDir,
        /// The client's organization, created with this UUID if it does not exist; a new
        /// organization when absent.
        #[arg(long)]
        org: Option<Uuid>,
        /// The scopes the client may be granted, comma-separated (pipelines:run, stats:read,
        /// runs:write); all of them when absent.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// Cluster mode: create the client clu::wide through the stream at these NATS URLs.
        #[arg(long, env = "RUNLEDGER_NATS")]
        nats: Option<String>,
        /// Cluster mode: the master key file (or set RUNLEDGER_MASTER_KEY).
        #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
        master_key_file: Option<std::path::PathBuf>,
    },
    /// List every client and API key (ids `rlk_...`) as JSON lines, revoked ones included.
    List {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Revoke a client: its tokens stop working at once.
    Revoke {
        #[command(flatten)]
        data_dir: DataDir,
        /// The client id (`rlc_...`).
        client_id: String,
        /// Cluster mode: revoke on every node through the stream at these NATS URLs.
        #[arg(long, env = "RUNLEDGER_NATS")]
        nats: Option<String>,
        /// Cluster mode: the master key file (or set RUNLEDGER_MASTER_KEY).
        #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
        master_key_file: Option<std::path::PathBuf>,
    },
}

impl clap::builder::ValueParserFactory for Scope {
    type Parser = clap::builder::ValueParser;

    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|text: &str| text.parse::<Scope>())
    }
}

pub fn run(args: ClientArgs) -> Result<ExitCode, String> {
    match args.command {
        ClientCommand::Create {
            data_dir,
            org,
            scopes,
            nats,
            master_key_file,
        } => {
            let scopes = if scopes.is_empty() {
                Scopes::all()
            } else {
                scopes.into_iter().collect()
            };
            if let Some(nats) = nats {
                let nats = super::NatsArgs {
                    nats,
                    master_key_file,
                };
                let client = cluster_runtime()?.block_on(async {
                    let cluster = nats.join().await?;
                    let (log, key) = (&cluster.log, &cluster.key);
                    create_in_cluster(log, key, &cluster.master, org.map(OrgId), scopes)
                        .await
                        .map_err(|e| format!("cannot create the client: {e}"))
                })?;
                println!("{}", credentials_json(&client.0));
                return Ok(ExitCode::SUCCESS);
            }
            let engine = data_dir.engine()?;
            let client = engine
                .create_client(org.map(OrgId), scopes)
                .map_err(|e| format!("cannot create the client: {e}"))?;
            println!("{}", credentials_json(&client));
        }
        ClientCommand::List { data_dir } => {
            for client in data_dir.engine()?.clients().map_err(|e| e.to_string())? {
                let line = json!({
                    "client_id": client.client_id,
                    "organization_uuid": client.organization.to_string(),
                    "scopes": client.scopes.to_string(),
                    "created_at": format_rfc3339(client.created_at),
                    "revoked_at": client.revoked_at.map(format_rfc3339),
                    "name": client.name,
                });
                println!("{line}");
            }
        }
        ClientCommand::Revoke {
            data_dir,
            client_id,
            nats,
            master_key_file,
        } => revoke(data_dir, client_id, nats, master_key_file)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Revokes a client or an API key: through the stream (cluster mode), through the server that
/// holds the data dir, or in the data dir itself.
pub fn revoke(
    data_dir: DataDir,
    client_id: String,
    nats: Option<String>,
    master_key_file: Option<std::path::PathBuf>,
) -> Result<(), String> {
    if let Some(nats) = nats {
        let nats = super::NatsArgs {
            nats,
            master_key_file,
        };
        cluster_runtime()?.block_on(async {
            let cluster = nats.join().await?;
            crate::cluster::revoke_client(&cluster.log, &cluster.key, &client_id)
                .await
                .map_err(|e| format!("cannot revoke {client_id}: {e}"))
        })?;
        println!("revoked {client_id} on every node");
        return Ok(());
    }
    // A running server holds the database: it revokes, and its token cache forgets.
    match data_dir.engine_unless_served()? {
        Some(engine) => engine
            .revoke_client(&client_id)
            .map_err(|e| format!("cannot revoke {client_id}: {e}"))?,
        None => {
            crate::admin::request(
                &data_dir.data_dir,
                &crate::admin::Command::Revoke(client_id.clone()),
            )?;
        }
    }
    println!("revoked {client_id}");
    Ok(())
}

pub(super) fn cluster_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))
}

/// New credentials as one JSON object: `client_id`, `client_secret`, `organization_uuid`,
/// `scopes` and, for an organization's first client, `output_key`.
pub fn credentials_json(client: &NewClient) -> String {
    let mut object = json!({
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "organization_uuid": client.organization.to_string(),
        "scopes": client.scopes.to_string(),
    });
    if let Some(key) = &client.output_key {
        object["output_key"] = json!(key);
    }
    object.to_string()
}

/// On a data dir without any client, creates one with every scope (in `org`, or a new
/// organization) and prints its credentials, which are shown only this once.
pub fn first_client(engine: &Engine, org: Option<OrgId>) -> Result<(), String> {
    if !engine.clients().map_err(|e| e.to_string())?.is_empty() {
        return Ok(());
    }
    let client = engine
        .create_client(org, Scopes::all())
        .map_err(|e| format!("cannot create the first client: {e}"))?;
    println!(
        "first start: created an OAuth client with every scope in organization {}; its secret is shown only now:",
        client.organization
    );
    println!("{}", credentials_json(&client));
    Ok(())
}

/// Creates an OAuth client cluster-wide (and its organization, with its derived output key,
/// unless it exists): one message, each write its own unit. Returns the credentials (with a new
/// organization's output key) and the message's sequence.
pub async fn create_in_cluster(
    log: &crate::cluster::log::Log,
    key: &crate::cluster::envelope::StreamKey,
    master: &crate::crypto::MasterKey,
    org: Option<crate::model::OrgId>,
    scopes: crate::auth::Scopes,
) -> crate::error::Result<(NewClient, u64)> {
    if scopes == crate::auth::Scopes::default() {
        return Err(crate::error::Error::invalid(
            "scopes",
            "a client needs at least one scope",
        ));
    }
    let new_org = org.is_none();
    let org = org.unwrap_or_else(|| crate::model::OrgId(Uuid::new_v4()));
    let (output_key, organization) = crate::cluster::organization(master, org);
    let (client_id, client_secret, create) = crate::engine::new_client(org, scopes);
    let subject = crate::cluster::log::CREDENTIALS_SUBJECT;
    let seq = crate::cluster::publish_once(log, key, subject, &[organization, create]).await?;
    Ok((
        NewClient {
            client_id,
            client_secret,
            organization: org,
            scopes,
            // Only for a new organization: an existing one may be adopted, with a key of its
            // own (`runledger key` shows it).
            output_key: new_org.then(|| output_key.to_base64()),
        },
        seq,
    ))
}
