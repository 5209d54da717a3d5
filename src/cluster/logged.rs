//! A message of the cluster's log as the applier hands it to a [`super::apply::Replica`]:
//! authenticated and decoded, or refused and why, with its bytes, so that a copy that comes
//! before its turn can be kept and read again.

use super::Cluster;
use super::envelope::Origin;
use crate::store::{Replayed, Skip, WriteOp};

/// A message of the log, read: its sequence, where and when the stream stored it, its bytes
/// (to keep a copy that comes before its turn) and what it holds.
#[derive(Debug)]
pub struct Logged {
    pub seq: u64,
    /// The stream's timestamp of the message, Unix microseconds.
    pub stored_at: i64,
    pub subject: String,
    pub payload: bytes::Bytes,
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    /// An authentic message of a writer, sent when the writer had confirmed its messages
    /// through `confirmed`: its operations (none for a pass-over permission), or why they are
    /// not applied (it still takes its place in the writer's order).
    Numbered {
        origin: Origin,
        confirmed: u64,
        ops: std::result::Result<Vec<WriteOp>, Skip>,
    },
    /// Skipped for good.
    Refused(Skip),
}

impl Logged {
    pub fn is_exclusive(&self) -> bool {
        matches!(&self.content, Content::Numbered { ops: Ok(ops), .. } if ops.iter().any(WriteOp::is_exclusive))
    }

    /// The message as kept for later: read again by [`Logged::from_copy`].
    pub fn copy(&self) -> Vec<u8> {
        let subject = self.subject.as_bytes();
        let subject = &subject[..subject.len().min(255)];
        let mut copy = Vec::with_capacity(17 + subject.len() + self.payload.len());
        copy.extend_from_slice(&self.seq.to_be_bytes());
        copy.extend_from_slice(&self.stored_at.to_be_bytes());
        copy.push(subject.len() as u8);
        copy.extend_from_slice(subject);
        copy.extend_from_slice(&self.payload);
        copy
    }

    /// A kept copy read again, as it was first read.
    pub fn from_copy(cluster: &Cluster, copy: &[u8]) -> Replayed {
        let damaged = |seq| Replayed {
            seq,
            ops: Err(Skip {
                label: "malformed",
                why: "a kept copy is damaged".into(),
            }),
        };
        if copy.len() < 17 {
            return damaged(0);
        }
        let seq = u64::from_be_bytes(copy[..8].try_into().expect("8 bytes"));
        let stored_at = i64::from_be_bytes(copy[8..16].try_into().expect("8 bytes"));
        let end = 17 + usize::from(copy[16]);
        let Some(Ok(subject)) = copy.get(17..end).map(std::str::from_utf8) else {
            return damaged(seq);
        };
        let payload = bytes::Bytes::copy_from_slice(&copy[end..]);
        let logged = super::apply::read(cluster, seq, stored_at, subject, payload);
        let ops = match logged.content {
            Content::Numbered { ops, .. } => ops,
            Content::Refused(skip) => Err(skip),
        };
        Replayed { seq, ops }
    }
}
