//! Inserting new keys in ascending order. Several new keys in one gap between stored keys go in
//! through a redb cursor, which buffers them and writes full leaves (one-by-one inserts split
//! leaves in half and leave append-heavy tables half empty); a key alone in its gap is inserted
//! in place (a cursor would rebuild its whole leaf for it).

use std::ops::Bound;

use redb::{CursorError, Table};

use crate::error::{Error, Result};

/// New keys in one gap from which a cursor writes them.
const RUN_FROM: usize = 4;

/// Inserts `entries`, whose keys must be ascending and absent from the table.
pub fn insert_new<const N: usize, V: AsRef<[u8]>>(
    table: &mut Table<'_, &'static [u8; N], &'static [u8]>,
    entries: &[([u8; N], V)],
) -> Result<()> {
    let present = || Error::Internal("a key inserted as new is already in the table".into());
    let mut rest = entries;
    while let Some((first, _)) = rest.first() {
        let mut gap = table.lower_bound_mut(Bound::Included(first))?;
        // The stored key after the gap bounds the new keys that fit in it.
        let next = gap.peek_next()?.map(|(key, _)| *key.value());
        if next.as_ref() == Some(first) {
            return Err(present());
        }
        let fits = next.map_or(rest.len(), |next| {
            rest.partition_point(|(key, _)| *key < next)
        });
        let (run, tail) = rest.split_at(fits);
        rest = tail;
        if run.len() < RUN_FROM {
            drop(gap);
            for (key, value) in run {
                if table.insert(key, value.as_ref())?.is_some() {
                    return Err(present());
                }
            }
            continue;
        }
        for (key, value) in run {
            match gap.insert_before(key, value.as_ref()) {
                Ok(()) => {}
                Err(CursorError::UnorderedKey) => return Err(present()),
                Err(CursorError::Storage(error)) => return Err(error.into()),
                Err(other) => return Err(Error::Internal(format!("cursor insert: {other}"))),
            }
        }
        gap.close()?;
    }
    Ok(())
}

/// Appends `entries`, whose ids must be ascending and above every id in the table (new
/// pipeline runs' aggregates), through one cursor.
pub fn append<V: AsRef<[u8]>>(
    table: &mut Table<'_, u64, &'static [u8]>,
    entries: &[(u64, V)],
) -> Result<()> {
    let Some((first, _)) = entries.first() else {
        return Ok(());
    };
    let mut end = table.lower_bound_mut(Bound::Included(*first))?;
    for (id, value) in entries {
        match end.insert_before(*id, value.as_ref()) {
            Ok(()) => {}
            Err(CursorError::UnorderedKey) => {
                return Err(Error::Internal(format!(
                    "id {id} appended below a stored one"
                )));
            }
            Err(CursorError::Storage(error)) => return Err(error.into()),
            Err(other) => return Err(Error::Internal(format!("cursor insert: {other}"))),
        }
    }
    end.close()?;
    Ok(())
}
