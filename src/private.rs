//! Files only their owner may read: the data dir is created `0700` and every file runledger
//! writes in it or in a backup (the database, the master key, the admin socket) is `0600`,
//! so other users of the machine can neither read runs and keys nor reach the admin socket.

use std::path::Path;

/// Creates `dir` (and missing parents) readable by its owner only. An existing directory is left
/// as it is, with a warning when others may enter it.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let existed = dir.is_dir();
        builder.mode(0o700);
        builder.create(dir)?;
        if existed {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "other users may enter this directory; `chmod 700` it to keep runs and keys private"
                );
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Makes an existing file readable and writable by its owner only.
pub fn restrict(file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Creates a file readable and writable by its owner only, failing if it exists, and makes its
/// contents durable.
pub fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_the_owners_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("key");
        write_new(&file, b"secret").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(write_new(&file, b"again").is_err(), "never overwritten");
        let loose = dir.join("loose");
        std::fs::write(&loose, b"x").unwrap();
        restrict(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
    }
}
