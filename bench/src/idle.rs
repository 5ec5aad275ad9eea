//! Idle keep-alive connections: open many, send one request on each, and keep them open doing
//! nothing. A proxy's memory with and without them gives its cost per idle connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Opens `count` connections to `addr`, sends one `GET /` on each (with `host` as the Host
/// header) and reads its response, and returns the connections, still open.
pub fn hold(addr: SocketAddr, host: &str, count: usize) -> io::Result<Vec<TcpStream>> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: skiff-bench\r\n\r\n");
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(request.as_bytes())?;
        read_response(&mut stream)?;
        held.push(stream);
    }
    Ok(held)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body) and checks its status is 200.
fn read_response(stream: &mut TcpStream) -> io::Result<()> {
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&received, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, &mut received)?;
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let status = head.lines().next().unwrap_or("").to_string();
        return Err(io::Error::other(format!("unexpected response: {status}")));
    }
    let content_length = head.lines().find_map(|line| {
        let value = line.strip_prefix("content-length:")?;
        value.trim().parse::<usize>().ok()
    });
    let complete = |received: &[u8]| match content_length {
        Some(length) => received.len() >= head_end + length,
        // Chunked: the body ends with the last, empty chunk.
        None => received[head_end..].ends_with(b"0\r\n\r\n"),
    };
    while !complete(&received) {
        read_more(stream, &mut received)?;
    }
    Ok(())
}

/// Appends what the next read returns to `received`; the end of the stream is an error.
fn read_more(stream: &mut TcpStream, received: &mut Vec<u8>) -> io::Result<()> {
    let mut buffer = [0u8; 4096];
    match stream.read(&mut buffer)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response ended",
        )),
        n => {
            received.extend_from_slice(&buffer[..n]);
            Ok(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A server that answers each connection's first request with `response`, then keeps it.
    fn answer_with(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let mut kept = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).unwrap();
                stream.write_all(response).unwrap();
                kept.push(stream);
            }
        });
        addr
    }

    #[test]
    fn reads_chunked_responses() {
        let addr = answer_with(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(hold(addr, "test", 2).unwrap().len(), 2);
    }

    #[test]
    fn a_status_other_than_200_is_an_error() {
        let addr = answer_with(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let error = hold(addr, "test", 1).unwrap_err();
        assert!(error.to_string().contains("503"), "{error}");
    }
}
