//! Opaque TCP bulk transfer: a server that is a source or a sink of bytes, and the client that
//! measures the throughput. The client names the direction in its first line (`source\n`: the
//! server sends; `sink\n`: the server receives). The line is not HTTP, so a proxy that detects
//! protocols treats the connection as opaque TCP at once. A third command, `close\n`, has the
//! server close at once: the connections of `skiff-bench handshakes`, which this side closes
//! first so that neither the client nor a sidecar in between holds a port in TIME-WAIT.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of every read and write, on both sides.
const CHUNK: usize = 256 * 1024;

/// Longest first line the server accepts.
const MAX_COMMAND: usize = 16;

/// Which way the bytes flow, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// The server sends, the client receives (like a large response).
    Download,
    /// The client sends, the server receives (like a large upload).
    Upload,
}

/// What one transfer measured.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Bytes that arrived at the receiving end.
    pub bytes: u64,
    /// From the first byte to the last (download) or from the first write until the server
    /// confirmed what it received (upload).
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in gigabytes (10^9 bytes) per second.
    pub fn gigabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Serves bulk transfers on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("skiff-bench bulk: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // The client closing the connection is how a download ends: not an error.
            let _ = serve_connection(stream).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream) -> io::Result<()> {
    let command = read_command(&mut stream).await?;
    if command == b"close" {
        return Ok(());
    }
    let mut buffer = vec![0u8; CHUNK];
    match command.as_slice() {
        b"source" => loop {
            stream.write_all(&buffer).await?;
        },
        b"sink" => {
            let mut received: u64 = 0;
            loop {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                received += n as u64;
            }
            stream.write_all(&received.to_be_bytes()).await?;
            stream.shutdown().await
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected `source`, `sink` or `close`",
        )),
    }
}

/// Reads the first line, byte by byte so nothing after it is consumed.
async fn read_command(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut command = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            return Ok(command);
        }
        if command.len() == MAX_COMMAND {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "command too long",
            ));
        }
        command.push(byte);
    }
}

/// Transfers bytes through `addr` for about `duration` in one direction, on one connection.
pub fn measure(addr: SocketAddr, direction: Direction, duration: Duration) -> io::Result<Transfer> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buffer = vec![0u8; CHUNK];
    match direction {
        Direction::Download => {
            stream.write_all(b"source\n")?;
            // The clock starts at the first byte: connection setup is not bulk transfer.
            read_some(&mut stream, &mut buffer)?;
            let start = Instant::now();
            let mut bytes = 0;
            while start.elapsed() < duration {
                bytes += read_some(&mut stream, &mut buffer)? as u64;
            }
            Ok(Transfer {
                bytes,
                elapsed: start.elapsed(),
            })
        }
        Direction::Upload => {
            stream.write_all(b"sink\n")?;
            let start = Instant::now();
            while start.elapsed() < duration {
                stream.write_all(&buffer)?;
            }
            stream.shutdown(Shutdown::Write)?;
            let mut received = [0u8; 8];
            stream.read_exact(&mut received)?;
            Ok(Transfer {
                bytes: u64::from_be_bytes(received),
                elapsed: start.elapsed(),
            })
        }
    }
}

fn read_some(stream: &mut std::net::TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    match stream.read(buffer)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the source closed the connection",
        )),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        addr
    }

    #[tokio::test]
    async fn measures_both_directions() {
        let addr = start().await;
        for direction in [Direction::Download, Direction::Upload] {
            let transfer = tokio::task::spawn_blocking(move || {
                measure(addr, direction, Duration::from_millis(100))
            })
            .await
            .unwrap()
            .unwrap();
            assert!(transfer.bytes > CHUNK as u64, "{direction:?}: {transfer:?}");
            assert!(transfer.elapsed >= Duration::from_millis(100));
        }
    }

    #[tokio::test]
    async fn refuses_an_unknown_command() {
        let addr = start().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        // Closed without an answer (a reset counts: the rest of the line was never read).
        let mut answer = [0u8; 64];
        let n = stream.read(&mut answer).await.unwrap_or(0);
        assert_eq!(n, 0);
    }
}
