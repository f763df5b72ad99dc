//! One-offs run for someone: the release phase, whose output goes to a
//! deploy's progress, and `run`, attached to a client's streams (and its
//! terminal, where the runner gives one) until it ends or the client goes.
//! Each runner starts the one-off its own way ([`crate::docker::one_off`],
//! [`crate::kubernetes`]); what is relayed, and how, is here.

use std::time::Duration;

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::docker::DockerRunner;
use crate::docker::one_off::Attached;
use crate::kubernetes::KubernetesRunner;
use crate::lines::Lines;
use crate::release::{Ended, OneOff, Progress};

/// The client a one-off is attached to.
pub struct Client<'a> {
    /// Its input, taken for the one-off (its end closes the one-off's).
    pub stdin: Box<dyn AsyncRead + Send + Unpin>,
    pub stdout: &'a mut (dyn AsyncWrite + Send + Unpin),
    pub stderr: &'a mut (dyn AsyncWrite + Send + Unpin),
    /// Its terminal's size, columns by rows, as it changes; `None`: plain streams.
    pub terminal: Option<watch::Receiver<(u16, u16)>>,
    /// Cancelled once the client has gone.
    pub gone: CancellationToken,
}

impl DockerRunner {
    /// The release phase in a one-off container: its output line by line to
    /// `output`; its exit code, or `None` when it took over `timeout`.
    pub async fn release_phase(&self, job: &OneOff<'_>, timeout: Duration, output: Progress<'_>) -> Ended {
        let attached = self.start_one_off(job).await?;
        let ran = tokio::time::timeout(timeout, async {
            let mut stream = attached.output;
            let mut lines = Lines::default();
            while let Some(chunk) = stream.next().await {
                for line in lines.push(&chunk?.into_bytes()) {
                    output(&line);
                }
            }
            if let Some(line) = lines.rest() {
                output(&line);
            }
            self.exit_code(&attached.name).await
        })
        .await;
        self.discard_one_off(&attached.name).await;
        match ran {
            Err(_) => Ok(None),
            Ok(code) => Ok(Some(code?)),
        }
    }

    /// Runs `job` in a container, attached to `client`; its exit code, or
    /// `None` when the client went first.
    pub async fn run_attached(&self, job: &OneOff<'_>, client: Client<'_>) -> Ended {
        let attached = self.start_one_off(job).await?;
        let name = attached.name.clone();
        tracing::info!(container = %name, "one-off started");
        let ended = self.relay(attached, client).await;
        self.discard_one_off(&name).await;
        Ok(ended)
    }

    /// Joins the one-off to the client until it ends; its exit code, or
    /// `None` when the client went first.
    async fn relay(&self, attached: Attached, client: Client<'_>) -> Option<i64> {
        let Attached { name, mut output, mut input } = attached;
        let Client { mut stdin, stdout, stderr, mut terminal, gone } = client;
        // Client → container, until the client's EOF, which closes its input.
        let feed = async move {
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
            std::future::pending::<()>().await;
        };
        let resize = async {
            let Some(size) = terminal.as_mut() else { return std::future::pending::<()>().await };
            while size.changed().await.is_ok() {
                let (columns, rows) = *size.borrow_and_update();
                self.resize(&name, columns, rows).await;
            }
            std::future::pending::<()>().await;
        };
        let relay = async {
            while let Some(Ok(chunk)) = output.next().await {
                let written = match chunk {
                    LogOutput::StdErr { message } => write(stderr, &message).await,
                    LogOutput::StdOut { message } | LogOutput::Console { message } => write(stdout, &message).await,
                    LogOutput::StdIn { .. } => Ok(()),
                };
                if written.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::select! {
            relayed = relay => {
                if !relayed {
                    return None;
                }
            }
            () = feed => {}
            () = resize => {}
            () = gone.cancelled() => return None,
        }
        tokio::select! {
            code = self.exit_code(&name) => code.ok(),
            () = gone.cancelled() => None,
        }
    }
}

impl KubernetesRunner {
    /// Runs `job` as a pod, with `kubectl attach -i` relaying input and
    /// output (no terminal there); its exit code, or `None` when the client
    /// went first. The pod may run for `timeout` at most.
    pub async fn run_attached(&self, job: &OneOff<'_>, timeout: Duration, client: Client<'_>) -> Ended {
        let (name, mut attach) = self.start_one_off(job, timeout).await?;
        tracing::info!(pod = %name, "one-off started");
        let (Some(mut input), Some(mut output), Some(mut errors)) =
            (attach.stdin.take(), attach.stdout.take(), attach.stderr.take())
        else {
            self.discard_one_off(&name).await;
            return Ok(Some(-1));
        };
        let Client { mut stdin, stdout, stderr, gone, .. } = client;
        let feed = async move {
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            drop(input);
            std::future::pending::<()>().await;
        };
        let relay = async {
            let (out, err) = tokio::join!(copy(&mut output, stdout), copy(&mut errors, stderr));
            out && err
        };
        let relayed = tokio::select! {
            relayed = relay => relayed,
            () = feed => false,
            () = gone.cancelled() => false,
        };
        let _ = attach.kill().await;
        let code = if relayed { Some(self.one_off_exit(&name).await?) } else { None };
        self.discard_one_off(&name).await;
        Ok(code)
    }
}

/// Writes `bytes` to the client and flushes them.
async fn write(to: &mut (dyn AsyncWrite + Send + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// Copies `from` to `to` as it comes; `false` when `to` went away.
async fn copy(from: &mut (impl AsyncRead + Unpin), to: &mut (dyn AsyncWrite + Send + Unpin)) -> bool {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if write(to, &buffer[..n]).await.is_err() {
                    return false;
                }
            }
        }
    }
}
