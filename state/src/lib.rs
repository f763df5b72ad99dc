//! nap's state, kept beside the gateway → builder → runner pipeline.
//!
//! - [`layout`] is the one place that knows nap's key names.
//! - [`Store`] is the key/value interface every backend implements.
//! - [`release`] is the release model (vN, commit, image, status, cause), and
//!   [`AppRecord`] the app model.
//! - [`lock`] holds the per-app deploy lock.
//! - `subnets` records which app's network holds which subnet.
//! - [`Rollout`] is the CI/CD flow's rollout request.
//! - [`StoreSettings`] is where the store is: settings `nap` and `nap-watch` share.

mod app;
mod certs;
pub mod layout;
pub mod lock;
pub mod release;
mod rollout;
mod settings;
mod store;
mod subnets;

pub use app::{ADMIN_GRANT, AppRecord, AppSummary, DomainGrant};
pub use certs::{AcmeState, CertSource, Certificate};
pub use lock::{Lock, LockError, LockSubject};
pub use release::{Release, ReleaseCause, ReleaseStatus, instance_addresses};
pub use rollout::{Rollout, Undo};
pub use settings::{DEFAULT_DATA_DIR, Secret, StoreSettings};
pub use store::{EtcdOptions, Pairs, Store, StoreError, WatchEvent, WatchStream};
