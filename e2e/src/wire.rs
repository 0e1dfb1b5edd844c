//! What a web runtime's answers look like on the wire, read on the client's
//! socket rather than timed: how many TCP segments carrying data each answer
//! arrived in.
//!
//! A server with Nagle's algorithm on (no `TCP_NODELAY`, as Spin 4.0.2's accepted
//! sockets) that writes an answer's head and body separately sends the body only
//! once the head is acknowledged, and a Linux client delays that acknowledgement
//! by up to 40 ms. One segment per answer means one write: nothing to wait for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// One answer read from a kept-alive connection.
#[derive(Debug)]
pub struct WireAnswer {
    pub status: u16,
    pub body: String,
    /// Segments carrying data that the answer arrived in (the kernel's count,
    /// `tcpi_data_segs_in`, before the request and after the whole answer).
    pub data_segments: u32,
    /// Bytes the first `read()` after the request returned, and the answer's.
    pub first_read: usize,
    pub length: usize,
}

/// A plain HTTP/1.1 client on one kept-alive connection, for [`WireAnswer`]s.
pub struct WireClient {
    stream: TcpStream,
    authority: String,
}

impl WireClient {
    pub fn connect(authority: &str) -> WireClient {
        let stream = TcpStream::connect(authority).unwrap_or_else(|e| panic!("{authority}: {e}"));
        // The request is one write either way; this keeps the client's own side
        // out of the picture.
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("a read timeout");
        WireClient {
            stream,
            authority: authority.to_owned(),
        }
    }

    /// `GET path`, and its whole answer.
    pub fn get(&mut self, path: &str) -> WireAnswer {
        let before = data_segments_in(&self.stream);
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.authority);
        self.stream
            .write_all(request.as_bytes())
            .expect("sending the request");
        let mut answer = Vec::new();
        let mut buffer = [0u8; 16 * 1024];
        let mut first_read = None;
        let length = loop {
            let n = self.stream.read(&mut buffer).expect("reading the answer");
            assert!(n > 0, "the server closed the connection mid-answer");
            first_read.get_or_insert(n);
            answer.extend_from_slice(&buffer[..n]);
            if let Some(length) = whole_answer_length(&answer) {
                break length;
            }
        };
        assert_eq!(answer.len(), length, "one answer at a time");
        let data_segments = data_segments_in(&self.stream) - before;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
        let body = if is_chunked(head) {
            dechunk(body)
        } else {
            body.to_owned()
        };
        WireAnswer {
            status,
            body,
            data_segments,
            first_read: first_read.unwrap_or(0),
            length,
        }
    }
}

/// The length of the answer at the start of `bytes` once all of it is there.
fn whole_answer_length(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    if is_chunked(&head) {
        let terminator = b"0\r\n\r\n";
        let body = &bytes[head_end..];
        // The counter's bodies are short text: the last chunk is the first
        // "0\r\n\r\n" that starts a line.
        (body.starts_with(terminator) || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n"))
            .then_some(bytes.len())
    } else {
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map(|value| value.trim().parse().expect("a content-length"))
            .unwrap_or(0);
        (bytes.len() >= head_end + length).then_some(head_end + length)
    }
}

fn is_chunked(head: &str) -> bool {
    head.to_ascii_lowercase()
        .lines()
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The kernel's count of segments carrying data received on `stream`.
fn data_segments_in(stream: &TcpStream) -> u32 {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut size = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a `tcp_info` of `size` bytes that the kernel fills in.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut size,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_data_segs_in
}
