//! The operator's channel to a running server: a Unix socket in the data dir (`admin.sock`)
//! taking one command per connection — `backup DIR` or `revoke CLIENT_ID` — and answering one
//! line, `ok ...` or `error ...`. Commands that need the database (whose file a running server
//! holds) go through it. The socket is created owner-only (under a restrictive umask, so there is
//! no moment when others could connect), in an owner-only data dir, and a connection is served
//! only when the peer's uid is the server's own (or root's); a backup directory must be
//! absolute, so that it cannot depend on the server's working directory.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::engine::Engine;

/// The socket's name inside the data dir.
pub const SOCKET_FILE: &str = "admin.sock";
/// The longest command line accepted.
const MAX_LINE: u64 = 4_096;

/// A command for the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Copy the database into this directory.
    Backup(PathBuf),
    /// Revoke this client and its tokens.
    Revoke(String),
}

impl Command {
    fn to_line(&self) -> String {
        match self {
            Command::Backup(dir) => format!("backup {}\n", dir.display()),
            Command::Revoke(client_id) => format!("revoke {client_id}\n"),
        }
    }

    fn parse(line: &str) -> Result<Command, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        match line.split_once(' ') {
            Some(("backup", dir)) if Path::new(dir).is_absolute() => {
                Ok(Command::Backup(PathBuf::from(dir)))
            }
            Some(("backup", dir)) => Err(format!(
                "the backup directory {} is not an absolute path",
                crate::error::quote(dir)
            )),
            Some(("revoke", id)) if !id.is_empty() => Ok(Command::Revoke(id.to_string())),
            _ => Err(format!(
                "unknown command {}: the commands are `backup DIR` and `revoke CLIENT_ID`",
                crate::error::quote(line)
            )),
        }
    }
}

/// The socket path for a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the data dir's socket, replacing a stale one (only the process holding the database
/// gets here, so no other server is using it), readable and writable by the owner only.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail. Files other
    // threads create in this instant are created no more permissive than asked, only less.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&path);
    // SAFETY: as above; restores the mask the process had.
    unsafe { libc::umask(previous) };
    let listener = bound?;
    crate::private::restrict(&path)?;
    Ok(listener)
}

/// Whether a connected peer may give commands: the server's own user, or root.
fn trusted(stream: &UnixStream) -> Result<(), String> {
    let peer = stream
        .peer_cred()
        .map_err(|e| format!("cannot tell who is connected: {e}"))?
        .uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if peer == own || peer == 0 {
        Ok(())
    } else {
        Err(format!(
            "uid {peer} may not give commands to this server (it runs as uid {own})"
        ))
    }
}

/// Answers commands on `listener` until the task is dropped (the server removes the socket).
pub async fn serve(engine: Arc<Engine>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(engine.clone(), stream));
            }
            // Out of file descriptors and the like: pause rather than spin.
            Err(error) => {
                tracing::warn!(%error, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(engine: Arc<Engine>, stream: UnixStream) {
    if let Err(reason) = trusted(&stream) {
        tracing::warn!(reason, "admin socket: refused a peer");
        let (_, mut write) = stream.into_split();
        let _ = write
            .write_all(format!("error {reason}\n").as_bytes())
            .await;
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE));
    let read = reader.read_line(&mut line);
    let reply = match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(_)) => match Command::parse(&line) {
            Ok(command) => run(engine, command).await,
            Err(reason) => Err(reason),
        },
        Ok(Err(error)) => Err(format!("cannot read the command: {error}")),
        Err(_) => Err("no command within 10 s".into()),
    };
    let reply = match reply {
        Ok(text) => format!("ok {text}\n"),
        Err(text) => format!("error {}\n", text.replace('\n', " ")),
    };
    let _ = write.write_all(reply.as_bytes()).await;
}

async fn run(engine: Arc<Engine>, command: Command) -> Result<String, String> {
    tracing::info!(?command, "admin command");
    match command {
        Command::Backup(dir) => {
            let report = tokio::task::spawn_blocking(move || engine.backup(&dir))
                .await
                .map_err(|e| format!("the backup stopped: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok(report.to_string())
        }
        Command::Revoke(client_id) => {
            let engine = engine.clone();
            let id = client_id.clone();
            tokio::task::spawn_blocking(move || engine.revoke_client(&id))
                .await
                .map_err(|e| format!("the revocation stopped: {e}"))?
                .map_err(|e| format!("cannot revoke {client_id}: {e}"))?;
            Ok(format!("revoked {client_id}"))
        }
    }
}

/// Sends `command` to the server running on `data_dir` and returns its answer (blocking).
pub fn request(data_dir: &Path, command: &Command) -> Result<String, String> {
    let path = socket_path(data_dir);
    let unreachable = |e: std::io::Error| {
        format!(
            "the data dir is in use, but its server's admin socket {} does not answer ({e})",
            path.display()
        )
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(unreachable)?;
    stream
        .write_all(command.to_line().as_bytes())
        .map_err(unreachable)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(unreachable)?;
    let reply = reply.trim_end();
    match reply.split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", text)) => Err(text.to_string()),
        _ => Err(format!("the server answered `{reply}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_back_as_written() {
        for command in [
            Command::Backup(PathBuf::from("/var/backups/runledger 2026")),
            Command::Revoke("rlc_abc".into()),
        ] {
            assert_eq!(Command::parse(&command.to_line()), Ok(command));
        }
        for bad in ["", "backup", "drop everything", "revoke"] {
            let reason = Command::parse(bad).unwrap_err();
            assert!(reason.contains("unknown command"), "{reason}");
        }
        for relative in ["backup ", "backup backups/today", "backup ./x"] {
            let reason = Command::parse(relative).unwrap_err();
            assert!(reason.contains("not an absolute path"), "{reason}");
        }
        let long = format!("revoke{}", " x".repeat(5_000));
        let reason = Command::parse(&format!("drop{long}")).unwrap_err();
        assert!(reason.len() < 250, "{reason}");
    }
}
