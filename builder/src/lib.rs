//! The builder: turns a pushed commit into a tagged image.
//!
//! The build context is the commit's tree, streamed as a tar straight from
//! the git object store ([`context`]), so no checkout is made and the repo is
//! never held in memory. Images carry labels naming the app and the tree, so a
//! push of a tree that was already built reuses its image.

mod app_files;
mod context;
mod dockerfile;
mod freezer;
mod image;

pub use app_files::{AppFiles, app_files};
pub use dockerfile::{Base, Dockerfile, DockerfileError, Refusal, Rules, Site, Unsure, Use};
pub use freezer::FreezeError;
pub use image::{BuildError, BuildRequest, Builder, Image, Registry, short_commit, tree_of};
