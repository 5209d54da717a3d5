//! `runledger key` and `runledger decrypt`: showing an organization's output key again, and
//! opening a sealed output with a key.

use std::io::Write;
use std::process::ExitCode;

use uuid::Uuid;

use super::DataDir;
use crate::model::OrgId;

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// The organization whose output key to print (base64).
    #[arg(long)]
    pub org: Uuid,
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
    let key = args
        .data_dir
        .engine()?
        .organization_key(OrgId(args.org))
        .map_err(|e| e.to_string())?;
    println!("{key}");
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
