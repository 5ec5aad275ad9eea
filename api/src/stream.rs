//! The configuration stream between a proxy and the control plane: the messages on the wire
//! and the newline-delimited JSON framing that carries them.
//!
//! # Protocol
//!
//! One long-lived HTTP/2 request per proxy, `POST /v1/stream` on port 15010 (h2c for now; the
//! same request over TLS once mTLS arrives). Both bodies are streams of frames; a frame is one
//! JSON object on one line, ended by `\n`.
//!
//! - Request body, proxy → control plane ([`ProxyMessage`]): first a
//!   `{"hello":{...}}` naming the workload, its pod IPs, the proxy's version and the
//!   configuration version it already runs (after a reconnect); then one `{"ack":{...}}` or
//!   `{"nack":{...}}` for every configuration received, in order.
//! - Response body, control plane → proxy ([`ControlMessage`]): a `{"config":{...}}` right
//!   after the Hello, then another each time the workload's view of the policy changes.
//!
//! A proxy that cannot apply a configuration NACKs it with a reason and keeps its last good
//! one; the control plane does not resend a NACKed version, it sends the next view that
//! differs. Versions are opaque strings that are equal exactly when the content is equal, so
//! every control plane replica (or a restarted one) names the same view the same way: a
//! reconnecting proxy is resynchronised by the first `config` it receives, and one it
//! already runs costs nothing but an ACK.
//!
//! The control plane is stateless: when the stream breaks, the proxy keeps serving what it
//! has and reconnects with jittered back-off.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{ProxyConfig, WorkloadRef};

/// The path of the stream on the control plane's API port.
pub const STREAM_PATH: &str = "/v1/stream";

/// Largest frame a proxy accepts: a configuration with tens of thousands of endpoints fits.
pub const MAX_CONFIG_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Largest frame the control plane accepts from a proxy (Hello, ACK, NACK).
pub const MAX_PROXY_FRAME_BYTES: usize = 64 * 1024;

/// What a proxy sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ProxyMessage {
    /// First and only once: who is asking.
    Hello(Hello),
    /// The configuration with this version is applied.
    Ack { version: String },
    /// The configuration with this version was refused; the previous one stays in force.
    Nack { version: String, reason: String },
}

/// Opens a stream: everything the control plane needs to compute this proxy's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The workload the proxy serves; selects the services and routes it receives.
    pub workload: WorkloadRef,
    /// The pod's addresses: decide which Service ports are this workload's inbound ports.
    pub pod_ips: Vec<IpAddr>,
    /// The proxy's build (`CARGO_PKG_VERSION`), shown by `skiff proxy-status`.
    pub proxy_version: String,
    /// The configuration version in force after a reconnect; `None` on first start.
    pub last_applied: Option<String>,
}

/// What the control plane sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ControlMessage {
    /// The whole configuration of the proxy (not a delta).
    Config(ProxyConfig),
}

/// What `GET /v1/proxies` reports for each connected proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyStatus {
    pub workload: WorkloadRef,
    /// Tells replicas of one workload apart.
    pub pod_ips: Vec<IpAddr>,
    pub proxy_version: String,
    /// When this stream was opened (Unix milliseconds on the wire).
    #[serde(with = "unix_millis")]
    pub connected_since: SystemTime,
    /// When the proxy last sent a message (Hello, ACK or NACK).
    #[serde(with = "unix_millis")]
    pub last_seen: SystemTime,
    /// The last configuration sent on this stream.
    pub sent_version: Option<String>,
    /// The last configuration the proxy applied.
    pub acked_version: Option<String>,
    /// The last configuration the proxy refused, and why.
    pub last_nack: Option<Nack>,
}

/// A refused configuration version and the proxy's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nack {
    pub version: String,
    pub reason: String,
}

/// How a proxy stands with respect to the configuration it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Nothing sent yet (the control plane has no valid policy).
    Waiting,
    /// Sent, neither ACKed nor NACKed yet.
    Pending,
    /// Running the version it was sent.
    Synced,
    /// Refused the version it was sent; runs an older one (or none).
    Refused,
}

impl ProxyStatus {
    pub fn sync_state(&self) -> SyncState {
        match &self.sent_version {
            None => SyncState::Waiting,
            Some(sent) if self.acked_version.as_ref() == Some(sent) => SyncState::Synced,
            Some(sent) if self.last_nack.as_ref().is_some_and(|n| &n.version == sent) => {
                SyncState::Refused
            }
            Some(_) => SyncState::Pending,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid frame")]
    Invalid(#[source] serde_json::Error),
}

/// Serialises one message as a frame: its JSON and a newline.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Our message types have string keys and no non-finite floats, so this cannot fail.
    let mut frame = serde_json::to_vec(message).expect("stream messages serialise");
    frame.push(b'\n');
    frame
}

/// Splits a byte stream, arriving in arbitrary chunks, back into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes received and not yet returned as a frame.
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline, so a frame arriving in many small
    /// chunks is scanned once, not once per chunk.
    scanned: usize,
    /// A frame longer than this is an error rather than unbounded memory.
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            scanned: 0,
            max_frame,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Empty lines are
    /// skipped. After an error the stream is unusable.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            let Some(offset) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n') else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max_frame {
                    return Err(FrameError::TooLarge {
                        limit: self.max_frame,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            if end > self.max_frame {
                return Err(FrameError::TooLarge {
                    limit: self.max_frame,
                });
            }
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            self.scanned = 0;
            let line = &line[..end];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(line)
                .map(Some)
                .map_err(FrameError::Invalid);
        }
    }

    /// Bytes received after the last complete frame; non-empty at the end of a stream means
    /// the stream was cut mid-frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// Timestamps travel as milliseconds since the Unix epoch.
mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let millis = value
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        millis.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ProxyMessage {
        ProxyMessage::Hello(Hello {
            workload: WorkloadRef {
                namespace: "shop".into(),
                name: "web".into(),
            },
            pod_ips: vec!["10.0.0.5".parse().unwrap()],
            proxy_version: "0.1.0".into(),
            last_applied: None,
        })
    }

    #[test]
    fn messages_are_one_json_line_with_a_readable_tag() {
        let frame = encode(&ProxyMessage::Nack {
            version: "v2".into(),
            reason: "bad\nroute".into(),
        });
        assert_eq!(
            String::from_utf8(frame).unwrap(),
            "{\"nack\":{\"version\":\"v2\",\"reason\":\"bad\\nroute\"}}\n"
        );
    }

    #[test]
    fn frames_survive_any_chunking() {
        let mut bytes = encode(&hello());
        bytes.extend(b"\n"); // a blank line is skipped
        bytes.extend(encode(&ProxyMessage::Ack {
            version: "v1".into(),
        }));
        for chunk in [1, 2, 7, bytes.len()] {
            let mut decoder = FrameDecoder::new(MAX_PROXY_FRAME_BYTES);
            let mut received = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                while let Some(message) = decoder.next_message::<ProxyMessage>().unwrap() {
                    received.push(message);
                }
            }
            assert_eq!(
                received,
                vec![
                    hello(),
                    ProxyMessage::Ack {
                        version: "v1".into()
                    }
                ],
                "chunk size {chunk}"
            );
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn configs_round_trip() {
        let config = ControlMessage::Config(ProxyConfig {
            version: "abc".into(),
            ..ProxyConfig::default()
        });
        let mut decoder = FrameDecoder::new(MAX_CONFIG_FRAME_BYTES);
        decoder.push(&encode(&config));
        assert_eq!(
            decoder.next_message::<ControlMessage>().unwrap(),
            Some(config)
        );
    }

    #[test]
    fn oversized_and_invalid_frames_are_errors() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&[b'x'; 17]);
        assert!(matches!(
            decoder.next_message::<ProxyMessage>(),
            Err(FrameError::TooLarge { limit: 16 })
        ));
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(b"{\"hello\":{\"surprise\":1}}\n");
        assert!(matches!(
            decoder.next_message::<ProxyMessage>(),
            Err(FrameError::Invalid(_))
        ));
        decoder.push(b"{\"partial\":");
        assert!(decoder.next_message::<ProxyMessage>().unwrap().is_none());
        assert_eq!(decoder.pending(), 11);
    }

    #[test]
    fn sync_state_compares_sent_acked_and_refused() {
        let mut status = ProxyStatus {
            workload: WorkloadRef::default(),
            pod_ips: vec![],
            proxy_version: String::new(),
            connected_since: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH,
            sent_version: None,
            acked_version: None,
            last_nack: None,
        };
        assert_eq!(status.sync_state(), SyncState::Waiting);
        status.sent_version = Some("v1".into());
        assert_eq!(status.sync_state(), SyncState::Pending);
        status.acked_version = Some("v1".into());
        assert_eq!(status.sync_state(), SyncState::Synced);
        status.sent_version = Some("v2".into());
        status.last_nack = Some(Nack {
            version: "v2".into(),
            reason: "no".into(),
        });
        assert_eq!(status.sync_state(), SyncState::Refused);
    }
}
