//! Aerospike's info protocol, the few bytes of it this project needs: one
//! command over a connection of its own, as `asinfo -v` sends it. The split
//! watch asks every node for its cluster key this way (the client's own info
//! calls go only to the nodes it still lists), and the fault suite asks nodes
//! for their statistics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request: a header (version 2, type 1, 48-bit length) and the command.
fn request(command: &str) -> Vec<u8> {
    let body = format!("{command}\n");
    let header = (2_u64 << 56) | (1_u64 << 48) | body.len() as u64;
    let mut request = header.to_be_bytes().to_vec();
    request.extend_from_slice(body.as_bytes());
    request
}

/// The length of the answer that follows a response header.
fn answer_length(header: [u8; 8]) -> usize {
    (u64::from_be_bytes(header) & 0xffff_ffff_ffff) as usize
}

/// The value of an answer `name\tvalue\n`.
fn value(answer: &[u8]) -> String {
    let answer = String::from_utf8_lossy(answer);
    answer
        .split_once('\t')
        .map_or("", |(_, value)| value)
        .trim_end()
        .to_owned()
}

/// Asks the node at `address` (`host:port`, its service port) `command`.
pub async fn ask(address: &str, command: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(&request(command)).await?;
    let mut header = [0_u8; 8];
    stream.read_exact(&mut header).await?;
    let mut answer = vec![0_u8; answer_length(header)];
    stream.read_exact(&mut answer).await?;
    Ok(value(&answer))
}

/// The same, blocking, for callers without a runtime; gives up after
/// `timeout` to connect and as long again for each read.
pub fn ask_blocking(
    node: &SocketAddr,
    command: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(node, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(&request(command))?;
    let mut header = [0_u8; 8];
    stream.read_exact(&mut header)?;
    let mut answer = vec![0_u8; answer_length(header)];
    stream.read_exact(&mut answer)?;
    Ok(value(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_framed_as_asinfo_frames_them() {
        let request = request("cluster-key");
        assert_eq!(&request[..2], [2, 1]);
        assert_eq!(answer_length(request[..8].try_into().unwrap()), 12);
        assert_eq!(&request[8..], b"cluster-key\n");
        assert_eq!(value(b"cluster-key\tA1B2C3\n"), "A1B2C3");
        assert_eq!(value(b"garbage"), "");
    }
}
