//! `runledger key` and `runledger decrypt`: API keys (`key create`, `key revoke`), showing an
//! organization's output key again (`key --org UUID`), and opening a sealed output with a key.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use uuid::Uuid;

use super::DataDir;
use crate::auth::{Scope, Scopes};
use crate::model::OrgId;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: Option<KeyCommand>,
    #[command(flatten)]
    pub data_dir: DataDir,
    /// The organization whose output key to print (base64).
    #[arg(long, required = true)]
    pub org: Option<Uuid>,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create an API key (a long-lived bearer credential, e.g. for an OpenLineage emitter's
    /// `api_key` auth); prints it as JSON (the key is shown only now and stored hashed).
    Create {
        #[command(flatten)]
        data_dir: DataDir,
        /// The key's organization, created with this UUID if it does not exist.
        #[arg(long)]
        org: Uuid,
        /// The scopes the key grants, comma-separated (pipelines:run, stats:read,
        /// runs:write); all of them when absent.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// What the key is for, kept with it (shown by `client list`).
        #[arg(long, default_value = "")]
        name: String,
        /// Cluster mode: create the key on every node through the stream at these NATS URLs.
        #[arg(long, env = "RUNLEDGER_NATS")]
        nats: Option<String>,
        /// Cluster mode: the master key file (or set RUNLEDGER_MASTER_KEY).
        #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
        master_key_file: Option<std::path::PathBuf>,
    },
    /// Revoke an API key: it stops working at once, on both fronts.
    Revoke {
        #[command(flatten)]
        data_dir: DataDir,
        /// The key id (`rlk_...`).
        key_id: String,
        /// Cluster mode: revoke on every node through the stream at these NATS URLs.
        #[arg(long, env = "RUNLEDGER_NATS")]
        nats: Option<String>,
        /// Cluster mode: the master key file (or set RUNLEDGER_MASTER_KEY).
        #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
        master_key_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// The organization's output key, base64.
    #[arg(long)]
    pub key: String,
    /// A logged `output` value: base64 of nonce || ciphertext || tag.
    pub value: String,
}

pub fn key(args: KeyArgs) -> Result<ExitCode, String> {
    match args.command {
        Some(KeyCommand::Create {
            data_dir,
            org,
            scopes,
            name,
            nats,
            master_key_file,
        }) => {
            let scopes = if scopes.is_empty() {
                Scopes::all()
            } else {
                scopes.into_iter().collect()
            };
            let org = OrgId(org);
            let (key, output_key) = match nats {
                Some(nats) => {
                    let nats = super::NatsArgs {
                        nats,
                        master_key_file,
                    };
                    super::client::cluster_runtime()?.block_on(async {
                        let cluster = nats.join().await?;
                        let (new, ops) = crate::engine::new_api_key(org, scopes, &name)
                            .map_err(|e| e.to_string())?;
                        let (_, organization) = crate::cluster::organization(&cluster.master, org);
                        let [create, issue] = ops;
                        crate::cluster::publish_once(
                            &cluster.log,
                            &cluster.key,
                            crate::cluster::log::CREDENTIALS_SUBJECT,
                            &[organization, create, issue],
                        )
                        .await
                        .map_err(|e| format!("cannot create the key: {e}"))?;
                        Ok::<_, String>((new, None))
                    })?
                }
                None => data_dir
                    .engine()?
                    .create_api_key(org, scopes, &name)
                    .map_err(|e| format!("cannot create the key: {e}"))?,
            };
            let mut object = json!({
                "api_key": key.api_key,
                "key_id": key.key_id,
                "organization_uuid": key.organization.to_string(),
                "scopes": key.scopes.to_string(),
            });
            if let Some(output_key) = output_key {
                object["output_key"] = json!(output_key);
            }
            println!("{object}");
        }
        Some(KeyCommand::Revoke {
            data_dir,
            key_id,
            nats,
            master_key_file,
        }) => {
            if !key_id.starts_with(crate::auth::KEY_ID_PREFIX) {
                return Err(format!(
                    "{key_id} is not an API key id (they start with {}); revoke OAuth clients with `runledger client revoke`",
                    crate::auth::KEY_ID_PREFIX
                ));
            }
            super::client::revoke(data_dir, key_id, nats, master_key_file)?;
        }
        None => {
            let org = args.org.ok_or("--org is required")?;
            let key = args
                .data_dir
                .engine()?
                .organization_key(OrgId(org))
                .map_err(|e| e.to_string())?;
            println!("{key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn decrypt(args: DecryptArgs) -> Result<ExitCode, String> {
    let plaintext = crate::crypto::decrypt_base64(&args.key, &args.value)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&plaintext)
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
