//! Socket helpers shared by listeners and upstreams.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes every part with vectored writes, handling partial writes.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|b| IoSlice::new(b)).collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "socket accepted no bytes",
            ));
        }
        while first < parts.len() && written >= parts[first].len() {
            written -= parts[first].len();
            first += 1;
        }
        if written > 0 {
            parts[first].advance(written);
        }
    }
    w.flush().await
}
