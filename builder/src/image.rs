//! Building, tagging and pushing an app's image.

mod ownership;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, ListImagesOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use nap_runner::ByteSize;
use tracing::info;

use crate::context::{open_repo, tar_stream, tree_size};
use crate::dockerfile::{Dockerfile, DockerfileError};
use crate::freezer::{FreezeError, Frozen};

/// The app an image belongs to. The builder puts it (and the tree) on a
/// build's last image only: the steps before it carry no label.
const LABEL_APP: &str = "nap.app";
const LABEL_TREE: &str = "nap.tree";
/// How many trailing build lines a failure report carries.
const LOG_TAIL: usize = 15;
/// The biggest Dockerfile nap reads.
const MAX_DOCKERFILE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no Dockerfile at the root of {commit}; nap builds apps from a Dockerfile")]
    NoDockerfile { commit: String },
    #[error("reading commit {commit}: {source}")]
    Git {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("the Dockerfile of {commit} is not a plain file (a link or a directory); nap builds from a Dockerfile")]
    DockerfileNotFile { commit: String },
    #[error("the Dockerfile of {commit} is over 1 MiB")]
    HugeDockerfile { commit: String },
    #[error("the {file} of {commit} is over {} KiB", limit / 1024)]
    HugeFile { file: &'static str, commit: String, limit: usize },
    #[error("the {file} of {commit} is not UTF-8 text")]
    NotText { file: &'static str, commit: String },
    #[error("the pushed files take {}, over the limit of {} (max_push_size)", size.human(), limit.human())]
    ContextTooLarge { size: ByteSize, limit: ByteSize },
    #[error("the build took longer than {} s (build_timeout) and was stopped", timeout.as_secs())]
    Timeout { timeout: Duration },
    #[error("the build was cut off: the Docker daemon went away ({0})")]
    CutOff(#[source] bollard::errors::Error),
    #[error("build failed: {message}")]
    Failed { message: String, log_tail: Vec<String> },
    #[error("pushing {image} to the registry failed: {message}")]
    Push { image: String, message: String },
    #[error("pulling {image} failed: {message}")]
    Pull { image: String, message: String },
    /// The Dockerfile uses an image the app may not, or cannot be read.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    #[error("Docker did not say the ID of the image {image} it built")]
    NoId { image: String },
    #[error("Docker daemon: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Freeze(#[from] FreezeError),
}

impl BuildError {
    /// The last build output lines, to show with the error.
    pub fn log_tail(&self) -> &[String] {
        match self {
            BuildError::Failed { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

/// The registry images are pushed to. Credentials are never printed or logged.
#[derive(Clone)]
pub struct Registry {
    /// `HOST:PORT`
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

pub struct BuildRequest<'a> {
    pub app: &'a str,
    /// The app's bare repo.
    pub repo: &'a Path,
    /// Full hex id of the commit to build.
    pub commit: &'a str,
    /// Release number the image is tagged with.
    pub release: u32,
    /// The ID of the image nap recorded for this commit's tree (see
    /// [`tree_of`]), if any: reused when Docker still has it, instead of a
    /// build. Never an image found by its labels, which any pusher can set.
    pub reuse: Option<&'a str>,
    /// The app's own image whose build steps this build may reuse from
    /// Docker's cache (its serving release's); with none, nothing is
    /// reused. Never the daemon's whole cache: a step of another app's
    /// build with the same text would hand this build that app's layer.
    pub cache_from: Option<&'a str>,
    /// The most bytes of files a build's context may hold.
    pub max_context: u64,
    /// How long the build may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Image {
    /// `REGISTRY/APP:vN`, what the release runs.
    pub reference: String,
    /// `REGISTRY/APP:git-SHORTSHA`
    pub commit_reference: String,
    /// TCP ports the Dockerfile exposes.
    pub exposed_ports: Vec<u16>,
    /// The image's ID (`sha256:…`), to record for its tree.
    pub id: String,
    /// True when an image of the same tree existed and no build ran.
    pub reused: bool,
}

pub struct Builder {
    docker: Docker,
    registry: Option<Registry>,
}

impl Builder {
    pub fn new(docker: Docker, registry: Option<Registry>) -> Self {
        Builder { docker, registry }
    }

    /// `REGISTRY/APP` (or `nap/APP` without a registry).
    pub fn repository(&self, app: &str) -> String {
        match &self.registry {
            Some(registry) => format!("{}/{app}", registry.address),
            None => format!("nap/{app}"),
        }
    }

    /// Builds (or reuses), tags and pushes the image of `req.commit`.
    /// Each line of output goes to `progress`.
    pub async fn build(
        &self,
        req: &BuildRequest<'_>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Image, BuildError> {
        let git_err = |source| BuildError::Git { commit: req.commit.to_owned(), source };
        let (tree, dockerfile, size) = {
            let repo = open_repo(req.repo).map_err(git_err)?;
            let tree = commit_tree(&repo, req.commit).map_err(git_err)?;
            let commit = || short_commit(req.commit).to_owned();
            let entry = tree.get_name("Dockerfile").ok_or_else(|| BuildError::NoDockerfile { commit: commit() })?;
            // Docker follows a link to read the Dockerfile it names: the text
            // checked must be the text built.
            if !matches!(entry.filemode(), 0o100_644 | 0o100_755) {
                return Err(BuildError::DockerfileNotFile { commit: commit() });
            }
            let (length, _) = repo.odb().and_then(|odb| odb.read_header(entry.id())).map_err(git_err)?;
            if length > MAX_DOCKERFILE {
                return Err(BuildError::HugeDockerfile { commit: commit() });
            }
            let blob = repo.find_blob(entry.id()).map_err(|_| BuildError::NoDockerfile { commit: commit() })?;
            let size = tree_size(&repo, &tree).map_err(git_err)?;
            let text = String::from_utf8(blob.content().to_vec())
                .map_err(|_| BuildError::NotText { file: "Dockerfile", commit: commit() })?;
            (tree.id(), text, size)
        };
        let repository = self.repository(req.app);
        let reference = format!("{repository}:v{}", req.release);
        let (id, reused) = if let Some(id) = self.existing(req.reuse).await? {
            progress(&format!("Reusing image {} built from the same tree; no rebuild", short_id(&id)));
            self.tag(&id, &reference).await?;
            (id, true)
        } else {
            if size > req.max_context {
                return Err(BuildError::ContextTooLarge { size: ByteSize(size), limit: ByteSize(req.max_context) });
            }
            let parsed = Dockerfile::parse(&dockerfile)?;
            // Before the build: its output reaches the pusher as it comes.
            // Dropping the build hangs up on Docker, which stops it.
            let checked_build = async {
                self.check_images(&parsed, req.app, progress).await?;
                self.run_build(req, tree, &reference, progress).await
            };
            tokio::time::timeout(req.timeout, checked_build)
                .await
                .map_err(|_| BuildError::Timeout { timeout: req.timeout })??;
            (self.id_of(&reference).await?, false)
        };
        // An image reused from before nap read Dockerfiles this way may
        // have one it does not parse: then it exposes nothing nap knows of.
        let exposed_ports = Dockerfile::parse(&dockerfile).map(|parsed| parsed.exposed_ports()).unwrap_or_default();
        let image = Image {
            reference,
            commit_reference: format!("{repository}:git-{}", short_commit(req.commit)),
            exposed_ports,
            id,
            reused,
        };
        self.tag(&image.reference, &image.commit_reference).await?;
        if self.registry.is_some() {
            for reference in [&image.reference, &image.commit_reference] {
                self.push(reference, progress).await?;
            }
        }
        info!(image = %image.reference, reused = image.reused, "image ready");
        Ok(image)
    }

    /// Removes the local images nap built or snapshotted for `app` (every
    /// image labelled with it), with all their tags; answers the tags. The
    /// registry keeps its copies. A build's steps are images too, each the
    /// parent of the next: the newest go first, and one still a parent is
    /// tried again once its children are gone.
    pub async fn remove_images(&self, app: &str) -> Result<Vec<String>, BuildError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
        let options = ListImagesOptionsBuilder::new().all(true).filters(&filters).build();
        let mut left = self.docker.list_images(Some(options)).await?;
        left.sort_by_key(|image| std::cmp::Reverse(image.created));
        let mut removed = Vec::new();
        while !left.is_empty() {
            let (before, mut parents, mut refused) = (left.len(), Vec::new(), None);
            for image in left {
                let options = bollard::query_parameters::RemoveImageOptionsBuilder::new().force(true).build();
                match self.docker.remove_image(&image.id, Some(options), None).await {
                    Ok(_) => removed.extend(image.repo_tags.into_iter().filter(|tag| tag != "<none>:<none>")),
                    // Gone with an image removed just before (a parent), or by someone else.
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                    // Still the parent of another: again, after it.
                    Err(err @ bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                        refused = Some(err);
                        parents.push(image);
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            // A pass that removed nothing would not do better again.
            if let Some(err) = refused.filter(|_| parents.len() == before) {
                return Err(err.into());
            }
            left = parents;
        }
        removed.sort();
        Ok(removed)
    }

    /// `id` when Docker still has that image.
    async fn existing(&self, id: Option<&str>) -> Result<Option<String>, BuildError> {
        let Some(id) = id else { return Ok(None) };
        match self.docker.inspect_image(id).await {
            Ok(_) => Ok(Some(id.to_owned())),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// The ID of the local image `reference`.
    async fn id_of(&self, reference: &str) -> Result<String, BuildError> {
        let image = self.docker.inspect_image(reference).await?;
        image.id.ok_or_else(|| BuildError::NoId { image: reference.to_owned() })
    }

    async fn run_build(
        &self,
        req: &BuildRequest<'_>,
        tree: git2::Oid,
        reference: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BuildError> {
        let labels = HashMap::from([(LABEL_APP, req.app.to_owned()), (LABEL_TREE, tree.to_string())]);
        // The classic builder takes a cached step only from the chain of a
        // `cachefrom` image; without one, from any image on the daemon.
        let own: Vec<&str> = req.cache_from.into_iter().collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(reference)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .cachefrom(&own)
            .nocache(own.is_empty())
            .version(BuilderVersion::BuilderV1)
            .build();
        let body = bollard::body_try_stream(tar_stream(req.repo.to_owned(), tree));
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut tail = VecDeque::with_capacity(LOG_TAIL);
        let mut remember = |line: &str| {
            if tail.len() == LOG_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(BuildError::Failed { message: one_line(&error), log_tail: tail.into() });
                }
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(BuildError::Failed { message: one_line(&message), log_tail: tail.into() });
                }
                Err(err) => return Err(BuildError::CutOff(err)),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(BuildError::Failed { message: one_line(&detail), log_tail: tail.into() });
            }
            if let Some(text) = info.stream {
                for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                    remember(line);
                    progress(line);
                }
            }
        }
        Ok(())
    }

    async fn tag(&self, source: &str, target: &str) -> Result<(), BuildError> {
        let (repo, tag) = target.rsplit_once(':').unwrap_or((target, "latest"));
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.docker.tag_image(source, Some(options)).await?;
        Ok(())
    }

    /// Pulls `reference` (`REGISTRY/REPO:TAG`) from its registry.
    pub async fn pull(&self, reference: &str, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<(), BuildError> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        self.pull_image(repo, tag, progress).await
    }

    /// Pulls `repo` at `tag` (a tag or a digest), without credentials, as
    /// a build pulls a base image.
    async fn pull_image(
        &self,
        repo: &str,
        tag: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BuildError> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::new().from_image(repo).tag(tag).build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        let reference = if tag.contains(':') { format!("{repo}@{tag}") } else { format!("{repo}:{tag}") };
        let pull_err = |message: String| BuildError::Pull { image: reference.clone(), message: one_line(&message) };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(pull_err(message));
                    }
                    if let Some(status) = info.status.filter(|s| s.contains("Digest") || s.starts_with("Status")) {
                        progress(&status);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => return Err(pull_err(error)),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(pull_err(message));
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Snapshots a container's filesystem as the image `reference`
    /// (`REPO:TAG`), with the container held still meanwhile as `docker
    /// commit` does; answers the image's id.
    pub async fn commit(&self, container: &str, reference: &str) -> Result<String, BuildError> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let inspected = self.docker.inspect_container(container, None).await?;
        let state = inspected.state.unwrap_or_default();
        // A paused container is still already; the daemon would not pause it either.
        let paused = state.paused == Some(true);
        let frozen = match (inspected.id, state.pid) {
            (Some(id), Some(pid)) if !paused => Frozen::freeze(&id, pid).await?,
            _ => None,
        };
        let options = bollard::query_parameters::CommitContainerOptionsBuilder::new()
            .container(container)
            .repo(repo)
            .tag(tag)
            .comment("snapshot by nap commit")
            .pause(frozen.is_none() && !paused)
            .build();
        let response = self.docker.commit_container(options, bollard::models::ContainerConfig::default()).await?;
        if let Some(frozen) = frozen {
            frozen.thaw()?;
        }
        Ok(response.id)
    }

    /// Pushes `reference` to the registry it names, with the configured
    /// credentials when that is the configured registry.
    pub async fn push(&self, reference: &str, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<(), BuildError> {
        let registry = self.registry.clone().unwrap_or_else(|| Registry {
            address: reference.split('/').next().unwrap_or_default().to_owned(),
            username: None,
            password: None,
        });
        let registry = &registry;
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let ours = reference.starts_with(&format!("{}/", registry.address));
        let credentials = registry.username.as_ref().filter(|_| ours).map(|username| DockerCredentials {
            username: Some(username.clone()),
            password: registry.password.clone(),
            serveraddress: Some(registry.address.clone()),
            ..Default::default()
        });
        progress(&format!("Pushing {reference}"));
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut stream = self.docker.push_image(repo, Some(options), credentials);
        let push_err = |message: String| BuildError::Push { image: reference.to_owned(), message: one_line(&message) };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => return Err(push_err(error)),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(push_err(message));
                }
                Err(err) => return Err(err.into()),
            };
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(push_err(message));
            }
            // Byte counters would flood the pusher's terminal; the per-layer
            // outcome and the final digest are the useful part.
            if let Some(status) = info
                .status
                .filter(|s| s.starts_with("Pushed") || s.starts_with("Layer already exists") || s.contains("digest:"))
            {
                progress(&status);
            }
        }
        Ok(())
    }
}

/// The ID of the tree of `commit` (full hex) in the bare repo `repo`: the
/// key under which nap records the image built from it.
pub fn tree_of(repo: &Path, commit: &str) -> Result<String, BuildError> {
    let git_err = |source| BuildError::Git { commit: commit.to_owned(), source };
    let repo = open_repo(repo).map_err(git_err)?;
    Ok(commit_tree(&repo, commit).map_err(git_err)?.id().to_string())
}

pub(crate) fn commit_tree<'r>(repo: &'r git2::Repository, commit: &str) -> Result<git2::Tree<'r>, git2::Error> {
    repo.revparse_single(commit)?.peel_to_commit()?.tree()
}

/// A commit's short form, as images' `git-SHORT` tags and nap's output show it.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
