//! Dereference: the Secrets a fleet's resources reference are put into its [`ResourceSet`], and
//! the missing ones are generated — as Secrets owned by the resource that needs them when the
//! server has Secrets, else in the secrets file (`--secrets-file`).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use super::names::FIELD_MANAGER;
use crate::crd::SecretKeyRef;
use crate::manifest::Manifests;
use crate::offline;
use crate::secret::SecretValue;
use crate::topology::{self, ResourceSet, SecretStore, phone_secret_ref, trunk_secret_ref};

/// Puts the namespace's Secrets into `set`, and generates the missing ones.
pub(crate) async fn fill(
    client: &Client,
    secrets: Option<&Store<Secret>>,
    secrets_file: Option<&Path>,
    set: &mut ResourceSet,
) {
    match secrets {
        Some(store) => {
            set.secrets.extend(cached(store, &set.namespace));
            for (reference, owner) in missing_with_owners(set) {
                if let Some(value) = create(client, &set.namespace, &reference, owner).await {
                    set.secrets.entry(reference.name).or_default().insert(reference.key, value);
                }
            }
        }
        None => {
            if let Some(file) = secrets_file {
                fill_from_file(file, set);
            }
        }
    }
}

/// The Secrets of `namespace` in the cache, as the resolver takes them.
fn cached(store: &Store<Secret>, namespace: &str) -> SecretStore {
    let mut out = SecretStore::new();
    for s in store.state().iter().filter(|s| s.namespace().as_deref() == Some(namespace)) {
        let keys = out.entry(s.name_any()).or_default();
        for (k, v) in s.data.clone().unwrap_or_default() {
            keys.insert(k, SecretValue::new(String::from_utf8_lossy(&v.0).into_owned()));
        }
    }
    out
}

/// Creates one generated Secret owned by `owner`; returns its value once the server has it.
async fn create(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
    owner: OwnerReference,
) -> Option<SecretValue> {
    let value = SecretValue::generate();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(reference.name.clone()),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into())])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(reference.key.clone(), value.expose().to_owned())])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %reference.name, %namespace, "generated a secret");
            Some(value)
        }
        Err(e) => {
            tracing::warn!(secret = %reference.name, error = %e, "could not create a generated secret");
            None
        }
    }
}

/// Without a Secrets API: the secrets file holds them, and the missing ones are generated into it.
fn fill_from_file(file: &Path, set: &mut ResourceSet) {
    let mut kept = Manifests::default();
    if file.is_file()
        && let Err(e) = kept.add_path(file)
    {
        tracing::error!(error = %e, "cannot read the secrets file");
        return;
    }
    if let Some(ns) = kept.namespaces.remove(&set.namespace) {
        set.secrets.extend(ns.secrets);
    }
    let mut generated: BTreeMap<String, SecretStore> = BTreeMap::new();
    for reference in topology::missing_secrets(set) {
        let value = SecretValue::generate();
        set.secrets.entry(reference.name.clone()).or_default().insert(reference.key.clone(), value.clone());
        generated
            .entry(set.namespace.clone())
            .or_default()
            .entry(reference.name)
            .or_default()
            .insert(reference.key, value);
    }
    if let Err(e) = offline::keep_generated_secrets(file, &generated) {
        tracing::error!(error = %e, "cannot keep generated secrets");
    }
}

/// Missing secrets with the resource that should own each generated Secret.
fn missing_with_owners(set: &ResourceSet) -> Vec<(SecretKeyRef, OwnerReference)> {
    let missing = topology::missing_secrets(set);
    let mut out = Vec::new();
    let mut owner_of = |reference: SecretKeyRef, owner: Option<OwnerReference>| {
        if let Some(owner) = owner.filter(|_| missing.contains(&reference))
            && !out.iter().any(|(r, _): &(SecretKeyRef, _)| r.name == reference.name)
        {
            out.push((reference, owner));
        }
    };
    for p in &set.phones {
        owner_of(phone_secret_ref(p), p.controller_owner_ref(&()));
    }
    for t in &set.trunks {
        owner_of(trunk_secret_ref(t), t.controller_owner_ref(&()));
    }
    out
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::controller::mock_api::{answer, mock, phone};

    #[tokio::test]
    async fn a_missing_secret_is_generated_and_owned_by_its_phone() {
        let (client, mut handle) = mock();
        let (store, _writer) = kube::runtime::reflector::store::<Secret>();
        let mut set = ResourceSet {
            namespace: "default".into(),
            phones: vec![phone("reception")],
            ..Default::default()
        };
        let server = tokio::spawn(async move { answer(&mut handle, None).await });
        fill(&client, Some(&store), None, &mut set).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::POST);
        assert!(uri.starts_with("/api/v1/namespaces/default/secrets"), "{uri}");
        assert_eq!(body["metadata"]["name"], "phone-reception");
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].as_str()),
            (Some("Phone"), Some("reception"), Some("uid-1"))
        );
        assert_eq!(owner["controller"], true);
        let value = body["stringData"]["secret"].as_str().unwrap();
        assert_eq!(value.len(), 32);
        assert_eq!(
            set.secrets["phone-reception"]["secret"].expose(),
            value,
            "used at once, not only next time"
        );
    }
}
