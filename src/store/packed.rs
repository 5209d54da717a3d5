//! Inserting new keys in ascending order through a redb cursor. Runs of inserts into one gap are
//! buffered by redb and written as full leaves, where one-by-one inserts split leaves in half
//! and leave append-heavy tables half empty.

use std::ops::Bound;

use redb::{CursorError, Table};

use crate::error::{Error, Result};

/// Inserts `entries`, whose keys must be ascending and absent from the table.
pub fn insert_new<'a, const N: usize>(
    table: &mut Table<'_, &'static [u8; N], &'static [u8]>,
    entries: impl IntoIterator<Item = (&'a [u8; N], &'a [u8])>,
) -> Result<()> {
    let mut entries = entries.into_iter().peekable();
    while let Some(&(first, _)) = entries.peek() {
        // One cursor per gap between existing keys; consecutive keys of the gap go in as a run.
        let mut gap = table.lower_bound_mut(Bound::Included(first))?;
        let mut inserted = false;
        while let Some(&(key, value)) = entries.peek() {
            match gap.insert_before(key, value) {
                Ok(()) => {
                    entries.next();
                    inserted = true;
                }
                Err(CursorError::UnorderedKey) if inserted => break,
                Err(CursorError::UnorderedKey) => {
                    return Err(Error::Internal(
                        "a key inserted as new is already in the table".into(),
                    ));
                }
                Err(CursorError::Storage(error)) => return Err(error.into()),
                Err(other) => return Err(Error::Internal(format!("cursor insert: {other}"))),
            }
        }
        gap.close()?;
    }
    Ok(())
}
