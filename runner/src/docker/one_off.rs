//! One-off containers: the release phase, and `run`. Each runs a command
//! of a release's image with the app's config, on the app's network,
//! attached: its output comes back as it is written, and (for `run`) input
//! and a terminal go in. It is never an instance: no route, no restart, and
//! no deploy retires it. It is removed once it ends, or when whoever waits
//! for it goes.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWrite;
use tracing::warn;

use super::DockerRunner;
use crate::error::RunError;
pub use crate::release::OneOff;

/// Labels a one-off container with its app; not `nap.app`, which marks
/// instances.
pub const LABEL: &str = "nap.one-off";

/// A one-off container that runs, attached.
pub struct Attached {
    pub name: String,
    /// What it writes; with a terminal, one stream of console output.
    pub output: BoxStream<'static, Result<LogOutput, RunError>>,
    /// Its input, while `stdin` was asked for.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl DockerRunner {
    /// Creates `job`'s container, attaches to it and starts it.
    pub async fn start_one_off(&self, job: &OneOff<'_>) -> Result<Attached, RunError> {
        let name = format!("nap-{}-v{}-{}", job.app, job.release, job.what);
        self.ensure_network(job.network).await?;
        self.remove(&name).await?;
        let env = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = ContainerCreateBody {
            image: Some(job.image.to_owned()),
            cmd: Some(job.command.to_vec()),
            env: Some(env),
            tty: Some(job.tty.is_some()),
            open_stdin: Some(job.stdin),
            stdin_once: Some(job.stdin),
            attach_stdin: Some(job.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some([(LABEL.to_owned(), job.app.to_owned())].into()),
            // The terminal starts at the client's size, before the command runs.
            host_config: Some(bollard::models::HostConfig {
                console_size: job.tty.map(|(columns, rows)| vec![usize::from(rows), usize::from(columns)]),
                ..Self::host_config(job.limits, &job.network.name)
            }),
            networking_config: Some(job.network.at(self.free_address(job.network).await?)),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.docker.create_container(Some(options), body).await?;
        let attached = async {
            let options =
                AttachContainerOptionsBuilder::new().stream(true).stdin(job.stdin).stdout(true).stderr(true).build();
            // Attached before it starts, so no output is missed.
            let attached = self.docker.attach_container(&name, Some(options)).await?;
            if let Some((columns, rows)) = job.tty {
                // Docker sizes the terminal as it starts; resized again after.
                self.resize(&name, columns, rows).await;
            }
            self.docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await?;
            if let Some((columns, rows)) = job.tty {
                self.resize(&name, columns, rows).await;
            }
            Ok::<_, RunError>(attached)
        }
        .await;
        match attached {
            Ok(attached) => {
                Ok(Attached { name, output: attached.output.map_err(RunError::from).boxed(), input: attached.input })
            }
            Err(err) => {
                self.discard_one_off(&name).await;
                Err(err)
            }
        }
    }

    /// Resizes a one-off's terminal; a container that is not running yet
    /// or any more is passed over.
    pub async fn resize(&self, name: &str, columns: u16, rows: u16) {
        let options = ResizeContainerTTYOptionsBuilder::new().w(i32::from(columns)).h(i32::from(rows)).build();
        if let Err(err) = self.docker.resize_container_tty(name, options).await {
            tracing::debug!(container = %name, error = %err, "resize passed over");
        }
    }

    /// Waits until the one-off ends, and answers its exit code.
    pub async fn exit_code(&self, name: &str) -> Result<i64, RunError> {
        let options = WaitContainerOptionsBuilder::new().condition("not-running").build();
        let mut waits = self.docker.wait_container(name, Some(options));
        match waits.next().await {
            Some(Ok(exit)) => Ok(exit.status_code),
            // Docker answers a non-zero exit as an error that carries the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(err.into()),
            None => Ok(-1),
        }
    }

    /// Removes a one-off container, whatever its state.
    pub async fn discard_one_off(&self, name: &str) {
        if let Err(err) = self.remove(name).await {
            warn!(container = %name, error = %err, "could not remove a one-off container");
        }
    }
}
