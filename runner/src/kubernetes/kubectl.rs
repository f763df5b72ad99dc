//! `kubectl`, run as a program (never through a shell) with the operator's
//! kubeconfig, context and namespace, so nap acts on a cluster exactly as
//! the operator's own `kubectl` would.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// What a kubectl call that is not a rollout wait may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    #[error("cannot run {program}: {source}; install kubectl or set `kubectl` in nap.toml")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubectl {verb}: {message}")]
    Failed { verb: String, message: String },
    #[error("kubectl {verb} did not finish within {} s", seconds)]
    Timeout { verb: String, seconds: u64 },
    #[error("kubectl {verb}: reading its output: {source}")]
    Read {
        verb: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubectl {verb}: unexpected output: {source}")]
    Output {
        verb: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Kubectl {
    program: String,
    /// `--kubeconfig`, `--context` and `--namespace`, before every verb.
    target: Vec<String>,
    namespace: Option<String>,
}

impl Kubectl {
    pub fn new(
        program: String,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: Option<String>,
    ) -> Self {
        let mut target = Vec::new();
        if let Some(kubeconfig) = kubeconfig {
            target.push(format!("--kubeconfig={}", kubeconfig.display()));
        }
        if let Some(context) = context {
            target.push(format!("--context={context}"));
        }
        if let Some(namespace) = &namespace {
            target.push(format!("--namespace={namespace}"));
        }
        Kubectl { program, target, namespace }
    }

    /// The namespace named in the settings; `None` is the kubeconfig's.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.target).args(args).kill_on_drop(true).stdin(Stdio::null());
        command
    }

    fn spawn(&self, command: &mut Command) -> Result<tokio::process::Child, KubectlError> {
        command.spawn().map_err(|source| KubectlError::Spawn { program: self.program.clone(), source })
    }

    /// Runs `kubectl ARGS` with `input` on its stdin; answers its stdout.
    pub async fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, KubectlError> {
        self.run_for(args, input, CALL_TIMEOUT, &|_| {}).await
    }

    /// Runs `kubectl ARGS` for at most `limit`, handing each line of its
    /// stdout to `progress` as it comes; answers the whole stdout.
    pub async fn run_for(
        &self,
        args: &[&str],
        input: Option<&str>,
        limit: Duration,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<String, KubectlError> {
        let verb = verb(args);
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = self.spawn(&mut command)?;
        let io_err = |source| KubectlError::Read { verb: verb.clone(), source };
        let finished = async {
            let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(io_err(std::io::Error::other("no pipes")));
            };
            // Written while the output is read, so neither side waits on a full pipe.
            let stdin = child.stdin.take();
            let write_stdin = async move {
                if let (Some(input), Some(mut stdin)) = (input, stdin) {
                    stdin.write_all(input.as_bytes()).await?;
                    // Dropping stdin closes it, so kubectl sees the end of the input.
                }
                Ok::<_, std::io::Error>(())
            };
            let read_stderr = async {
                let mut text = String::new();
                stderr.read_to_string(&mut text).await.map(|_| text)
            };
            let read_stdout = async {
                let mut lines = BufReader::new(stdout).lines();
                let mut text = String::new();
                while let Some(line) = lines.next_line().await? {
                    progress(&line);
                    text.push_str(&line);
                    text.push('\n');
                }
                Ok::<_, std::io::Error>(text)
            };
            let ((), stdout, stderr) = tokio::try_join!(write_stdin, read_stdout, read_stderr).map_err(io_err)?;
            let status = child.wait().await.map_err(io_err)?;
            Ok((status, stdout, stderr))
        };
        let (status, stdout, stderr) = tokio::time::timeout(limit, finished)
            .await
            .map_err(|_| KubectlError::Timeout { verb: verb.clone(), seconds: limit.as_secs() })??;
        if status.success() {
            Ok(stdout)
        } else {
            Err(KubectlError::Failed { verb, message: last_line(&stderr, &stdout, status) })
        }
    }

    /// `kubectl get RESOURCE -o json`, read as `T`.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T, KubectlError> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.push("--output=json");
        let text = self.run(&full, None).await?;
        serde_json::from_str(&text).map_err(|source| KubectlError::Output { verb: verb(&full), source })
    }

    /// `kubectl ARGS` started with its standard streams piped (`attach -i`),
    /// killed when dropped.
    pub fn attached(&self, args: &[&str]) -> Result<tokio::process::Child, KubectlError> {
        let mut command = self.command(args);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.spawn(&mut command)
    }

    /// The output of `kubectl ARGS` as it is written, until it ends or the
    /// stream is dropped (which kills kubectl).
    pub fn stream(&self, args: &[&str]) -> impl Stream<Item = Result<bytes::Bytes, KubectlError>> + use<> {
        let verb = verb(args);
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let child = self.spawn(&mut command);
        futures_util::stream::unfold(Some(child), move |state| {
            let verb = verb.clone();
            async move {
                let mut child = match state? {
                    Ok(child) => child,
                    Err(err) => return Some((Err(err), None)),
                };
                let mut buffer = vec![0u8; 8192];
                let read = match child.stdout.as_mut() {
                    Some(stdout) => stdout.read(&mut buffer).await,
                    None => Ok(0),
                };
                match read {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        Some((Ok(bytes::Bytes::from(buffer)), Some(Ok(child))))
                    }
                    Err(source) => Some((Err(KubectlError::Read { verb, source }), None)),
                }
            }
        })
    }
}

/// The words before the first flag: `apply`, `rollout status`, ...
fn verb(args: &[&str]) -> String {
    let words: Vec<&str> = args.iter().take_while(|a| !a.starts_with('-')).take(2).copied().collect();
    words.join(" ")
}

/// kubectl's reason: the last line it wrote to stderr, without its `error: `.
fn last_line(stderr: &str, stdout: &str, status: std::process::ExitStatus) -> String {
    let last = |text: &str| text.lines().rev().map(str::trim).find(|line| !line.is_empty()).map(str::to_owned);
    last(stderr).or_else(|| last(stdout)).map_or_else(
        || format!("exited with {status}"),
        |line| line.strip_prefix("error: ").map_or(line.clone(), str::to_owned),
    )
}
