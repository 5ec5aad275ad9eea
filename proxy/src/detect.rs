//! Protocol detection: decides from a connection's first bytes (or from the Service port's
//! declaration) whether to speak HTTP/1, HTTP/2 or copy opaque bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How the proxy handles a connection's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    Http1,
    Http2,
    /// Opaque bytes, copied both ways. Includes the app's own TLS.
    Tcp,
}

/// What the proxy does before touching the bytes of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The port declares its protocol; no bytes are read first.
    Declared(Protocol),
    /// A server-speaks-first port: waiting for the client would stall it, so copy opaquely.
    ServerFirst,
    /// Read the first bytes and decide.
    Detect,
}

/// Ports treated as opaque without waiting for the client: protocols where the server speaks
/// first (SMTP 25/587, MySQL, NATS) and binary database protocols that gain nothing from
/// detection (PostgreSQL, Redis, memcached, MongoDB), as in Linkerd's default opaque ports.
pub const SERVER_FIRST_PORTS: [u16; 8] = [25, 587, 3306, 4222, 5432, 6379, 11211, 27017];

/// Decides how to treat a connection to `port` whose Service declares `declared`.
pub fn decide(declared: Option<Protocol>, port: u16, server_first_ports: &[u16]) -> Decision {
    match declared {
        Some(protocol) => Decision::Declared(protocol),
        None if server_first_ports.contains(&port) => Decision::ServerFirst,
        None => Decision::Detect,
    }
}

/// The HTTP/2 connection preface a prior-knowledge client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token we wait for before calling the bytes opaque.
const MAX_METHOD_LEN: usize = 16;
/// Longest HTTP/1 request line we wait for; longer first lines are treated as opaque.
const MAX_REQUEST_LINE: usize = 16 * 1024;
/// What must follow the request target on an HTTP/1 request line.
const HTTP1_VERSION: &[u8] = b"HTTP/1.";

/// The outcome of looking at the bytes read so far. Once `Known`, more bytes never change it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Known(Protocol),
    NeedMore,
}

/// The protocol a connection's first `bytes` show, or `None` while more are needed (what
/// [`detect`] decides on after each read). Once `Some`, more bytes never change it: the fuzz
/// target `detect` holds it to that.
pub fn protocol_of(bytes: &[u8]) -> Option<Protocol> {
    match classify(bytes) {
        Verdict::Known(protocol) => Some(protocol),
        Verdict::NeedMore => None,
    }
}

fn classify(bytes: &[u8]) -> Verdict {
    if bytes.is_empty() {
        return Verdict::NeedMore;
    }
    let common = bytes.len().min(H2_PREFACE.len());
    if bytes[..common] == H2_PREFACE[..common] {
        return if common == H2_PREFACE.len() {
            Verdict::Known(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    // A TLS ClientHello (record type 22) is the app's own TLS: opaque.
    if bytes[0] == 0x16 {
        return Verdict::Known(Protocol::Tcp);
    }
    classify_request_line(bytes)
}

/// HTTP/1 only when the first line is `METHOD SP request-target SP HTTP/1.x`; a line such as
/// `HELO example` (SMTP on an unusual port) is opaque.
fn classify_request_line(bytes: &[u8]) -> Verdict {
    let opaque = Verdict::Known(Protocol::Tcp);
    // Method: RFC 9110 token characters; in practice upper-case letters.
    let method_len = bytes
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    if method_len > MAX_METHOD_LEN {
        return opaque;
    }
    match bytes.get(method_len) {
        None => return Verdict::NeedMore,
        Some(b' ') if method_len > 0 => {}
        Some(_) => return opaque,
    }
    // Request target: visible ASCII up to the next space.
    let rest = &bytes[method_len + 1..];
    let target_len = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    // Judged by where the target ends, not by how many bytes have arrived: otherwise a long
    // line would be opaque when its first 16 KiB came in one read and HTTP/1 when all of it did.
    if method_len + 1 + target_len >= MAX_REQUEST_LINE {
        return opaque;
    }
    match rest.get(target_len) {
        None => return Verdict::NeedMore,
        Some(b' ') if target_len > 0 => {}
        Some(_) => return opaque,
    }
    let version = &rest[target_len + 1..];
    let compared = version.len().min(HTTP1_VERSION.len());
    if version[..compared] != HTTP1_VERSION[..compared] {
        opaque
    } else if compared == HTTP1_VERSION.len() {
        Verdict::Known(Protocol::Http1)
    } else {
        Verdict::NeedMore
    }
}

/// Reads from `io` until the protocol is known, the peer stops sending (EOF) or `timeout`
/// passes; `read` holds bytes already read from it. Returns the protocol and every byte read,
/// which must be replayed (see [`Rewind`]).
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    read: BytesMut,
    timeout: Duration,
) -> io::Result<(Protocol, Bytes)> {
    let mut buffer = read;
    buffer.reserve(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match classify(&buffer) {
            Verdict::Known(protocol) => return Ok((protocol, buffer.freeze())),
            Verdict::NeedMore => {}
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buffer)).await;
        match read {
            Ok(Ok(0)) | Err(_) => return Ok((Protocol::Tcp, buffer.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream that first replays bytes already read (during detection), then reads from the
/// inner stream. Writes go straight through.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty view still pins the detection buffer: release it, since the
                // connection may stay open (and idle) for a long time.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        let table: &[(&[u8], Verdict)] = &[
            (b"GET / HTTP/1.1\r\n", Verdict::Known(Protocol::Http1)),
            (b"POST /x HTTP/1.1\r\n", Verdict::Known(Protocol::Http1)),
            (b"M-SEARCH * HTTP/1.1", Verdict::Known(Protocol::Http1)),
            (b"GE", Verdict::NeedMore),
            (b"GET /index.html", Verdict::NeedMore),
            (b"GET /index.html HTT", Verdict::NeedMore),
            (b"GET / HTTP/1.0\r\n", Verdict::Known(Protocol::Http1)),
            (b"HELO skiff\r\n", Verdict::Known(Protocol::Tcp)),
            (b"AUTH PLAIN x y\r\n", Verdict::Known(Protocol::Tcp)),
            (b"GET / FTP/1.0\r\n", Verdict::Known(Protocol::Tcp)),
            (b"GET  / HTTP/1.1\r\n", Verdict::Known(Protocol::Tcp)),
            (b"PING\r\n", Verdict::Known(Protocol::Tcp)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Verdict::Known(Protocol::Http2),
            ),
            (b"PRI * HTTP/2", Verdict::NeedMore),
            (b"PRI * HTTP/1.1\r\n", Verdict::Known(Protocol::Http1)),
            (b"\x16\x03\x01\x02\x00", Verdict::Known(Protocol::Tcp)),
            (
                b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
                Verdict::Known(Protocol::Tcp),
            ),
            (b"get / HTTP/1.1", Verdict::Known(Protocol::Tcp)),
            (b"*3\r\n$3\r\nSET\r\n", Verdict::Known(Protocol::Tcp)),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Verdict::Known(Protocol::Tcp)),
            (b" GET", Verdict::Known(Protocol::Tcp)),
        ];
        for (bytes, verdict) in table {
            assert_eq!(
                &classify(bytes),
                verdict,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn declared_protocol_wins_then_server_first_ports() {
        assert_eq!(
            decide(Some(Protocol::Http2), 5432, &SERVER_FIRST_PORTS),
            Decision::Declared(Protocol::Http2)
        );
        assert_eq!(
            decide(None, 5432, &SERVER_FIRST_PORTS),
            Decision::ServerFirst
        );
        assert_eq!(decide(None, 8080, &SERVER_FIRST_PORTS), Decision::Detect);
    }

    /// Not a coverage-guided fuzzer (that needs a nightly toolchain), but the same contract:
    /// any bytes at all get a verdict without panicking, and growing input never turns a
    /// known verdict back into "need more".
    #[test]
    fn arbitrary_bytes_never_panic_and_verdicts_are_stable() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b"GETPOSTPRI *HTTP/2.0\r\n\x16\x03 -_abc\x00\xff";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut known = None;
            for end in 0..=bytes.len() {
                match (classify(&bytes[..end]), known) {
                    (Verdict::Known(p), None) => known = Some(p),
                    (Verdict::Known(p), Some(k)) => assert_eq!(p, k, "{:?}", &bytes[..end]),
                    (Verdict::NeedMore, Some(k)) => {
                        panic!("{:?} was {k:?}, then undecided", &bytes[..end])
                    }
                    (Verdict::NeedMore, None) => {}
                }
            }
        }
    }

    /// Found by the `detect` fuzz target (seed `long-request-line`): a request line longer
    /// than [`MAX_REQUEST_LINE`] was opaque after its first 16 KiB, then HTTP/1 once the rest
    /// arrived, so the protocol depended on how the client's bytes were split into reads.
    #[test]
    fn a_request_line_too_long_is_opaque_however_it_arrives() {
        let mut request = b"GET /search?q=".to_vec();
        request.resize(17_014, b'a');
        request.extend_from_slice(b" HTTP/1.1\r\nHost: shop\r\n\r\n");
        for end in [
            MAX_REQUEST_LINE - 1,
            MAX_REQUEST_LINE,
            16_556,
            request.len(),
        ] {
            let expected = if end < MAX_REQUEST_LINE {
                Verdict::NeedMore
            } else {
                Verdict::Known(Protocol::Tcp)
            };
            assert_eq!(classify(&request[..end]), expected, "first {end} bytes");
        }
        // The longest target that still fits is HTTP/1.
        let mut request = b"GET /".to_vec();
        request.resize(MAX_REQUEST_LINE - 1, b'a');
        request.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(classify(&request), Verdict::Known(Protocol::Http1));
    }

    #[tokio::test]
    async fn detection_replays_what_it_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (protocol, prefix) = detect(&mut server, BytesMut::new(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut replay = Rewind::new(prefix, server);
        drop(client);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (protocol, prefix) = detect(&mut server, BytesMut::new(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Tcp);
        assert!(prefix.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_that_stalls_is_opaque() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HT").await.unwrap();
        let (protocol, prefix) = detect(&mut server, BytesMut::new(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Tcp);
        assert_eq!(&prefix[..], b"PRI * HT");
    }
}
