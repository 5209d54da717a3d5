//! The options commands share: where the data dir is, and how cluster-mode commands reach the
//! cluster (`--nats`, the master key).

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::Log;
use crate::crypto::{MASTER_KEY_ENV, MasterKey};
use crate::store::{Store, StoreOptions};

/// The data dir option every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// Where the database lives.
    #[arg(long, default_value = "./data", env = "RUNLEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
}

impl DataDir {
    /// Opens the store, or says plainly why not.
    pub fn open(&self) -> Result<Store, String> {
        self.database()?;
        Store::open(&self.data_dir, StoreOptions::default()).map_err(|e| e.to_string())
    }

    /// The database file, which must exist: a command that reads or changes a store never
    /// makes an empty one in a mistyped directory.
    fn database(&self) -> Result<std::path::PathBuf, String> {
        let path = self.data_dir.join(crate::store::DATABASE_FILE);
        if path.exists() {
            Ok(path)
        } else {
            Err(format!(
                "there is no database at {} (is --data-dir the right directory?)",
                path.display()
            ))
        }
    }

    /// Opens the engine over the store.
    pub fn engine(&self) -> Result<crate::engine::Engine, String> {
        self.engine_with(StoreOptions::default())
    }

    /// Opens the engine, or `None` when a running server holds the data dir (reach it through
    /// its admin socket then). A data dir without a database is an error, not created.
    pub fn engine_unless_served(&self) -> Result<Option<crate::engine::Engine>, String> {
        self.database()?;
        match Store::open(&self.data_dir, StoreOptions::default()) {
            Ok(store) => crate::engine::Engine::new(store)
                .map(Some)
                .map_err(|e| format!("cannot start: {e}")),
            Err(crate::store::OpenError::InUse(_)) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Opens the engine with these options.
    pub fn engine_with(&self, options: StoreOptions) -> Result<crate::engine::Engine, String> {
        let store = Store::open(&self.data_dir, options).map_err(|e| e.to_string())?;
        crate::engine::Engine::new(store).map_err(|e| format!("cannot start: {e}"))
    }
}

/// How many threads a write transaction may use, for the commands that write.
#[derive(Debug, Clone, clap::Args)]
pub struct WriterThreads {
    /// Threads one write transaction may use: a large one gathers its rollups and writes its
    /// task index beside the rest; 1 writes on the writer thread alone. The database comes
    /// out the same for any number. Default: the cores, at most 4.
    #[arg(long, env = "RUNLEDGER_WRITER_THREADS")]
    pub writer_threads: Option<usize>,
}

impl WriterThreads {
    /// The number to use: the one given (at least 1), or the default.
    pub fn get(&self) -> usize {
        self.writer_threads
            .map_or(StoreOptions::default().writer_threads, |n| n.max(1))
    }
}

/// How long a command waits for the NATS servers to answer at first.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Where the cluster's NATS servers are, and the master key every node shares.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`).
    #[arg(long, env = "RUNLEDGER_NATS")]
    pub nats: String,
    /// A file holding the master key (base64 of 32 bytes), the same on every node; or set
    /// RUNLEDGER_MASTER_KEY.
    #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl NatsArgs {
    /// The shared master key; cluster mode has no per-node key file.
    pub fn master(&self) -> Result<MasterKey, String> {
        MasterKey::given(self.master_key_file.as_deref())?.ok_or_else(|| {
            format!(
                "cluster mode needs the master key every node shares: set {MASTER_KEY_ENV} or give --master-key-file (make one with `head -c 32 /dev/urandom | base64 > master.key`)"
            )
        })
    }

    pub async fn connect(&self) -> Result<Log, String> {
        Log::connect(&self.nats, CONNECT_WAIT)
            .await
            .map_err(|e| e.to_string())
    }

    /// Connects and proves the master key is the cluster's (every command does before it
    /// publishes anything): the log, the stream's identity and the key of its messages.
    pub async fn join(&self) -> Result<Joined, String> {
        let master = self.master()?;
        let log = self.connect().await?;
        let (identity, key) = log.join(&master).await.map_err(|e| e.to_string())?;
        Ok(Joined {
            log,
            identity,
            key,
            master,
        })
    }
}

/// A command's connection to a cluster whose key it holds.
pub struct Joined {
    pub log: Log,
    pub identity: crate::cluster::StreamIdentity,
    pub key: crate::cluster::StreamKey,
    pub master: MasterKey,
}
