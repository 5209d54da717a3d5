//! The digest of a database: a SHA-256 per table over its entries in key order, and one over
//! those. Two databases with equal digests hold the same bytes in every table, whatever their
//! files' page layout, so replicas and regroupings of one write sequence can be compared.

use redb::{Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value};
use sha2::{Digest, Sha256};

use super::tables;
use crate::error::{Error, Result};

/// The digests of one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// Every table's name and digest, in the fixed table order.
    pub tables: Vec<(String, [u8; 32])>,
}

impl Digests {
    /// One hash over every table's name and digest.
    pub fn whole(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (name, digest) in &self.tables {
            write_field(&mut hasher, name.as_bytes());
            hasher.update(digest);
        }
        hasher.finalize().into()
    }
}

/// Hashes every table of `snapshot`, each in key order.
pub fn digest(snapshot: &ReadTransaction) -> Result<Digests> {
    struct Hash<'a> {
        snapshot: &'a ReadTransaction,
        digests: Digests,
    }
    impl tables::TableVisitor for Hash<'_> {
        type Error = Error;
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<()> {
            let mut hasher = Sha256::new();
            let open = self.snapshot.open_table(table)?;
            for entry in open.iter()? {
                let (key, value) = entry?;
                write_field(&mut hasher, K::as_bytes(&key.value()).as_ref());
                write_field(&mut hasher, V::as_bytes(&value.value()).as_ref());
            }
            let name = table.name().to_string();
            self.digests.tables.push((name, hasher.finalize().into()));
            Ok(())
        }
    }
    let mut hash = Hash {
        snapshot,
        digests: Digests { tables: Vec::new() },
    };
    tables::visit_tables(&mut hash)?;
    Ok(hash.digests)
}

/// A length-prefixed field, so that entries cannot run into each other.
fn write_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u32).to_be_bytes());
    hasher.update(bytes);
}
