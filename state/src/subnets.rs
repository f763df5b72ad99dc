//! Which app's network holds which subnet: `/nap/subnets/ADDRESS-BITS`
//! names the app. A subnet is claimed with a compare-and-swap, so no two
//! apps share one, and every host that shares the store gives an app's
//! network the same subnet (a snapshot keeps its IP on another host). The
//! claim is the only record: it cannot half-change.

use crate::{Store, StoreError, layout};

impl Store {
    /// Every claimed subnet (`ADDRESS/BITS`) and the app that holds it, in
    /// key order.
    pub async fn subnet_claims(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .list(&layout::subnet_claims())
            .await?
            .into_iter()
            .filter_map(|(key, app)| Some((layout::parse_subnet_claim(&key)?, String::from_utf8(app).ok()?)))
            .collect())
    }

    /// The subnet of `app`'s network, if it claimed one: the first in key
    /// order, should two claims made side by side have left it two.
    pub async fn app_subnet(&self, app: &str) -> Result<Option<String>, StoreError> {
        Ok(self.subnet_claims().await?.into_iter().find_map(|(subnet, holder)| (holder == app).then_some(subnet)))
    }

    /// Claims `subnet` for `app`; answers whether it is `app`'s now.
    pub async fn claim_subnet(&self, app: &str, subnet: &str) -> Result<bool, StoreError> {
        let claim = layout::subnet_claim(subnet);
        if self.compare_and_swap(&claim, None, app.as_bytes()).await? {
            return Ok(true);
        }
        Ok(self.get(&claim).await?.as_deref() == Some(app.as_bytes()))
    }

    /// Lets `subnet` go, if `app` holds it.
    pub async fn release_subnet(&self, app: &str, subnet: &str) -> Result<(), StoreError> {
        let claim = layout::subnet_claim(subnet);
        if self.get(&claim).await?.as_deref() == Some(app.as_bytes()) {
            self.delete(&claim).await?;
        }
        Ok(())
    }

    /// Lets every subnet `app` holds go.
    pub async fn release_subnets(&self, app: &str) -> Result<(), StoreError> {
        for (subnet, holder) in self.subnet_claims().await? {
            if holder == app {
                self.release_subnet(app, &subnet).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[tokio::test]
    async fn a_subnet_is_one_apps_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_embedded(&dir.path().join("state.db")).expect("store");
        assert_eq!(store.app_subnet("shop").await.unwrap(), None);
        assert!(store.claim_subnet("shop", "10.112.0.0/24").await.unwrap());
        assert!(store.claim_subnet("shop", "10.112.0.0/24").await.unwrap(), "its own claim again");
        assert!(!store.claim_subnet("blog", "10.112.0.0/24").await.unwrap(), "another app's");
        assert!(store.claim_subnet("blog", "10.112.1.0/24").await.unwrap());
        assert_eq!(store.app_subnet("shop").await.unwrap().as_deref(), Some("10.112.0.0/24"));
        store.release_subnet("blog", "10.112.0.0/24").await.unwrap();
        assert_eq!(store.app_subnet("shop").await.unwrap().as_deref(), Some("10.112.0.0/24"), "not blog's to let go");
        store.release_subnets("shop").await.unwrap();
        assert_eq!(store.app_subnet("shop").await.unwrap(), None);
        let claims = store.subnet_claims().await.unwrap();
        assert_eq!(claims, [("10.112.1.0/24".to_owned(), "blog".to_owned())]);
    }
}
