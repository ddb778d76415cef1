//! Deterministic bytes produced on the fly, never held in memory as a whole (shared by the
//! file benchmark and the 200 MB test with `#[path]`).

/// `size` bytes of xorshift output from `seed`.
pub(crate) struct Generated {
    left: u64,
    x: u64,
}

impl Generated {
    pub(crate) fn new(size: u64, seed: u64) -> Self {
        Self {
            left: size,
            x: seed | 1,
        }
    }
}

impl tokio::io::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = buf
            .remaining()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for _ in 0..n / 8 {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            buf.put_slice(&self.x.to_le_bytes());
        }
        let rest = n % 8;
        buf.put_slice(&self.x.to_be_bytes()[..rest]);
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}
