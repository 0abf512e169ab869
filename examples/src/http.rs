//! A bounded HTTP check from the controller: does the application answer?

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line's code and the body of one `GET http://host:port/path`.
///
/// # Errors
/// A message when the server cannot be reached or answers no HTTP.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    within: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status line from {host}:{port}"))?;
        Ok((code, body.to_owned()))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no answer from {host}:{port} within {within:?}"))?
}

/// Polls `http://host:port/path` until it answers 200 with `expected` in its
/// body, up to `within`.
///
/// # Errors
/// The last status or error seen when time runs out.
pub async fn wait_until_ok(
    host: &str,
    port: u16,
    path: &str,
    expected: &str,
    within: Duration,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match get(host, port, path, Duration::from_secs(5)).await {
            Ok((200, body)) if body.contains(expected) => return Ok(body),
            Ok((200, _)) => format!("200 without {expected:?}"),
            Ok((code, _)) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + Duration::from_secs(1) > deadline {
            return Err(format!("http://{host}:{port}{path} did not answer 200 with {expected:?} within {within:?}; last: {last}"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
