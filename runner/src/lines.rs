//! Output that comes in chunks (a container's, a pod's), cut into lines.

/// Cuts output that comes in chunks (a container's) into lines.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The lines `chunk` ends; what follows the last newline waits for
    /// the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&whole).lines().map(|line| line.trim_end_matches('\r').to_owned()).collect()
    }

    /// What is left after the last newline, at the end.
    pub fn rest(self) -> Option<String> {
        (!self.partial.is_empty()).then(|| String::from_utf8_lossy(&self.partial).into_owned())
    }
}
