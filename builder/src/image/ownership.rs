//! Which app an image belongs to, asked of the daemon before a build starts
//! (its output streams to the pusher live, so after would be too late).
//! Each image the Dockerfile uses ([`Dockerfile::bases`], then
//! [`Dockerfile::uses`]) is looked up as the classic builder looks it up (by
//! name, digest, ID or ID prefix), pulled first when absent as the build
//! would pull it, and refused when nap's `nap.app` label names another app
//! (so a re-tagged copy is refused too), or when it is an untagged step of
//! some build: the builder labels only a build's last image, so the steps
//! before it carry no owner.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use bollard::models::ImageInspect;

use super::{BuildError, Builder, LABEL_APP, short_id};
use crate::dockerfile::{Base, Dockerfile, DockerfileError, ImageName, Refusal, Rules, Use};

impl Builder {
    /// Refuses, before anything is built, a Dockerfile that would use an
    /// image `app` may not use.
    pub(super) async fn check_images(
        &self,
        dockerfile: &Dockerfile<'_>,
        app: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BuildError> {
        let rules = Rules { app, registry: self.registry.as_ref().map(|registry| registry.address.as_str()) };
        let mut known: HashMap<String, Base> = HashMap::new();
        for used in dockerfile.bases(rules)? {
            if let Entry::Vacant(slot) = known.entry(used.image.clone()) {
                slot.insert(self.judge(&used, app, progress).await?);
            }
        }
        let uses = dockerfile.uses(rules, &|image| known.get(image).cloned())?;
        for used in uses {
            if let Entry::Vacant(slot) = known.entry(used.image.clone()) {
                slot.insert(self.judge(&used, app, progress).await?);
            }
        }
        Ok(())
    }

    /// Refuses `used` unless it is a base image or one of `app`'s own;
    /// answers what a stage built on it starts with.
    async fn judge(&self, used: &Use, app: &str, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<Base, BuildError> {
        let refuse = |refusal| BuildError::from(DockerfileError::refused(used.site.clone(), refusal));
        let image = if let Some(image) = self.inspect(&used.image).await? {
            image
        } else {
            let name = ImageName::parse(&used.image).ok_or_else(|| refuse(Refusal::Missing))?;
            let (repository, tag) = name.pull_args();
            // Only this line: the pull's own lines would tell the digests of an image refused next.
            progress(&format!("Pulling {} to check it", used.image));
            match self.pull_image(&repository, &tag, &|_| {}).await {
                Ok(()) => {}
                Err(BuildError::Pull { message, .. }) => return Err(refuse(Refusal::Pull { message })),
                Err(err) => return Err(err),
            }
            self.inspect(&used.image).await?.ok_or_else(|| refuse(Refusal::Missing))?
        };
        let config = image.config.unwrap_or_default();
        match config.labels.as_ref().and_then(|labels| labels.get(LABEL_APP)) {
            Some(owner) if owner != app => {
                return Err(refuse(Refusal::OtherApp { owner: owner.clone(), app: app.to_owned() }));
            }
            Some(_) => {}
            None => {
                let tagged = image.repo_tags.is_some_and(|tags| !tags.is_empty())
                    || image.repo_digests.is_some_and(|digests| !digests.is_empty());
                if !tagged {
                    let id = image.id.as_deref().map(short_id).unwrap_or_default().to_owned();
                    return Err(refuse(Refusal::Untagged { id }));
                }
            }
        }
        Ok(Base { env: config.env.unwrap_or_default(), triggers: config.on_build.unwrap_or_default() })
    }

    /// The image `reference` names, as the daemon resolves it, if it has it.
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInspect>, BuildError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(image)),
            // Not there, or not a name the daemon reads.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 400 | 404, .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}
