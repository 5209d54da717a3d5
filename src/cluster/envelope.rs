//! The authenticated frame around every message of the cluster's stream. Anyone who can publish
//! to NATS could otherwise write into every node; so each message carries a tag, HMAC-SHA256
//! under a key derived from the master key every node and command holds, over the cluster's
//! identity, the subject and the whole frame. A node checks the tag before it decodes
//! anything: a forged or tampered message, or one replayed from another cluster, is refused
//! (and skipped the same way on every node).
//!
//! The frame also says who wrote the message and where it stands in that writer's sequence
//! ([`Origin`]), and how far that writer had its messages confirmed when it sent this one: the
//! applier applies a writer's messages only in number order (see [`crate::cluster::publisher`]
//! for why), so a message replayed within the cluster is a duplicate and changes nothing.
//!
//! A node's write also carries a deadline: a copy the stream stored after it is not applied
//! (every node compares it with the stream's own timestamp of the copy), so a write its sender
//! was told failed cannot land after what the sender does next.
//!
//! ```text
//! version (1) | writer (16) | number (8, big-endian) | confirmed (8) | kind (1) | deadline (8: Unix µs, 0 none) | body | tag (32)
//! tag = HMAC-SHA256(stream key, "runledger frame v2" | cluster id (16) | subject length (1) | subject | everything before the tag)
//! ```

use std::fmt;

use hmac::{KeyInit, Mac};
use uuid::Uuid;

use crate::crypto::MasterKey;

/// The frame's version byte.
const VERSION: u8 = 2;
const HEAD_LEN: usize = 1 + 16 + 8 + 8 + 1 + 8;
const TAG_LEN: usize = 32;

type Hmac = hmac::Hmac<sha2::Sha256>;

/// One writer of the stream: a publisher instance (a node's, or one command's run), random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterId(pub [u8; 16]);

impl WriterId {
    pub fn random() -> WriterId {
        WriterId(crate::crypto::random_bytes())
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Who wrote a message, and its place (from 1) in what that writer sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub writer: WriterId,
    pub number: u64,
}

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Write operations ([`crate::cluster::codec`]).
    Operations,
    /// The operator's permission to pass over stream sequences `first..=last` that are missing
    /// or cannot be applied (`runledger cluster skip`).
    PassOver,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Operations => 1,
            Kind::PassOver => 2,
        }
    }
}

/// An opened frame: its origin, kind, deadline and body.
#[derive(Debug)]
pub struct Frame<'a> {
    pub origin: Origin,
    /// Every message of its writer numbered up to this was confirmed (stored) before this one
    /// was sent.
    pub confirmed: u64,
    pub kind: Kind,
    /// A copy stored after this instant (Unix microseconds) is not applied.
    pub deadline: Option<i64>,
    pub body: &'a [u8],
}

/// Why a frame is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its tag does not match: forged, altered, of another cluster or another master key.
    #[error(
        "its authentication tag does not match (forged, altered, from another cluster, or sealed with another master key)"
    )]
    Unauthentic,
    /// Authentic but not readable by this build, or too short to be a frame at all.
    #[error("{0}")]
    Malformed(String),
}

impl Refusal {
    /// The label of the skipped-messages metric.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unauthentic => "unauthentic",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

/// What a frame carries, to seal.
#[derive(Clone, Copy, Debug)]
pub struct Sealed<'a> {
    pub origin: Origin,
    pub confirmed: u64,
    pub kind: Kind,
    pub deadline: Option<i64>,
    pub body: &'a [u8],
}

/// The key that seals and opens the frames of one cluster's stream.
#[derive(Clone)]
pub struct StreamKey {
    key: [u8; 32],
    cluster: Uuid,
}

impl StreamKey {
    /// The key of cluster `cluster` (the stream's identity) under `master`.
    pub fn new(master: &MasterKey, cluster: Uuid) -> StreamKey {
        StreamKey {
            key: master.derive(b"runledger stream messages v1"),
            cluster,
        }
    }

    pub fn cluster(&self) -> Uuid {
        self.cluster
    }

    /// A value that proves the master key without revealing it, kept with the stream's
    /// identity: a command or node whose key gives another value holds the wrong key.
    pub fn key_check(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"runledger key check");
        mac.update(self.cluster.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self) -> Hmac {
        Hmac::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    fn frame_mac(&self, subject: &str, frame: &[u8]) -> Hmac {
        let mut mac = self.mac();
        mac.update(b"runledger frame v2");
        mac.update(self.cluster.as_bytes());
        let subject = &subject.as_bytes()[..subject.len().min(255)];
        mac.update(&[subject.len() as u8]);
        mac.update(subject);
        mac.update(frame);
        mac
    }

    /// The frame of `body` from `origin`, to publish on `subject`.
    pub fn seal(&self, subject: &str, message: &Sealed<'_>) -> Vec<u8> {
        let Sealed {
            origin,
            confirmed,
            kind,
            deadline,
            body,
        } = *message;
        let mut frame = Vec::with_capacity(HEAD_LEN + body.len() + TAG_LEN);
        frame.push(VERSION);
        frame.extend_from_slice(&origin.writer.0);
        frame.extend_from_slice(&origin.number.to_be_bytes());
        frame.extend_from_slice(&confirmed.to_be_bytes());
        frame.push(kind.code());
        frame.extend_from_slice(&deadline.unwrap_or(0).to_be_bytes());
        frame.extend_from_slice(body);
        let tag = self.frame_mac(subject, &frame).finalize().into_bytes();
        frame.extend_from_slice(&tag);
        frame
    }

    /// Checks a frame's tag (in constant time), then reads it; the error says why a message
    /// is refused.
    pub fn open<'a>(&self, subject: &str, frame: &'a [u8]) -> Result<Frame<'a>, Refusal> {
        if frame.len() < HEAD_LEN + TAG_LEN {
            return Err(Refusal::Malformed(format!(
                "{} bytes, too short for a runledger message",
                frame.len()
            )));
        }
        let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
        self.frame_mac(subject, signed)
            .verify_slice(tag)
            .map_err(|_| Refusal::Unauthentic)?;
        let malformed = |why: String| Err(Refusal::Malformed(why));
        if signed[0] != VERSION {
            return malformed(format!(
                "frame version {}, this build reads {VERSION} (upgrade this node)",
                signed[0]
            ));
        }
        let writer = WriterId(signed[1..17].try_into().expect("16 bytes"));
        let number = u64::from_be_bytes(signed[17..25].try_into().expect("8 bytes"));
        let confirmed = u64::from_be_bytes(signed[25..33].try_into().expect("8 bytes"));
        let kind = match signed[33] {
            1 => Kind::Operations,
            2 => Kind::PassOver,
            other => return malformed(format!("unknown message kind {other}")),
        };
        if number == 0 || confirmed >= number {
            return malformed(format!(
                "writer sequence number {number}, confirmed through {confirmed}"
            ));
        }
        let deadline = i64::from_be_bytes(signed[34..42].try_into().expect("8 bytes"));
        Ok(Frame {
            origin: Origin { writer, number },
            confirmed,
            kind,
            deadline: (deadline != 0).then_some(deadline),
            body: &signed[HEAD_LEN..],
        })
    }
}

/// The body of a pass-over permission: the inclusive range of stream sequences.
pub fn pass_over_body(first: u64, last: u64) -> Vec<u8> {
    let mut body = first.to_be_bytes().to_vec();
    body.extend_from_slice(&last.to_be_bytes());
    body
}

/// The range a pass-over permission's body names.
pub fn read_pass_over(body: &[u8]) -> Result<(u64, u64), String> {
    let bytes: [u8; 16] = body
        .try_into()
        .map_err(|_| format!("a pass-over permission of {} bytes", body.len()))?;
    let first = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let last = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    if first == 0 || last < first {
        return Err(format!("a pass-over permission of {first}..={last}"));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cluster: u128, master: u8) -> StreamKey {
        StreamKey::new(
            &MasterKey::from_base64(&base64_of([master; 32])).unwrap(),
            Uuid::from_u128(cluster),
        )
    }

    fn base64_of(bytes: [u8; 32]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_frame_opens_only_unchanged_under_its_own_key_cluster_and_subject() {
        let origin = Origin {
            writer: WriterId([9; 16]),
            number: 42,
        };
        let sealing = key(1, 7);
        let message = Sealed {
            origin,
            confirmed: 40,
            kind: Kind::Operations,
            deadline: Some(1_800_000_000_000_000),
            body: b"body",
        };
        let frame = sealing.seal("runledger.data", &message);
        let opened = sealing.open("runledger.data", &frame).unwrap();
        assert_eq!(
            (
                opened.origin,
                opened.confirmed,
                opened.kind,
                opened.deadline,
                opened.body
            ),
            (origin, 40, Kind::Operations, message.deadline, &b"body"[..])
        );
        for (other, subject) in [
            (key(1, 8), "runledger.data"),        // another master key
            (key(2, 7), "runledger.data"),        // another cluster
            (key(1, 7), "runledger.credentials"), // moved to another subject
        ] {
            assert_eq!(
                other.open(subject, &frame).unwrap_err(),
                Refusal::Unauthentic
            );
        }
        for at in 0..frame.len() {
            let mut tampered = frame.clone();
            tampered[at] ^= 1;
            assert!(
                sealing.open("runledger.data", &tampered).is_err(),
                "byte {at}"
            );
        }
        assert!(sealing.open("runledger.data", &[0; 8]).is_err());
        assert_ne!(key(1, 7).key_check(), key(1, 8).key_check());
        assert_ne!(key(1, 7).key_check(), key(2, 7).key_check());
    }

    #[test]
    fn pass_over_ranges_round_trip_and_nonsense_is_refused() {
        assert_eq!(read_pass_over(&pass_over_body(5, 9)), Ok((5, 9)));
        assert!(read_pass_over(&pass_over_body(9, 5)).is_err());
        assert!(read_pass_over(&pass_over_body(0, 5)).is_err());
        assert!(read_pass_over(b"short").is_err());
    }
}
