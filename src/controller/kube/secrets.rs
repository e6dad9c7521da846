//! Dereference: the Secrets a fleet's resources may reference are put into its
//! [`ResourceSet`], and the default ones that are missing are generated.
//!
//! Writing a resource must never give its author more than they could read themselves, so the
//! controller reads only Secrets labelled `asterisk.operator.dev/secret=usable` (an opt-in by
//! someone who may write Secrets), of type Opaque. It generates only the default
//! `phone-<name>` / `trunk-<name>` Secrets (labelled, owned by their resource); an explicit
//! `secretRef` to a Secret that is not available is reported, never invented. Without a
//! Secrets API, secrets live in the secrets file (`--secrets-file`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

use super::names::FIELD_MANAGER;
use crate::controller::secret_roles::SecretRole;
use crate::crd::{AuthMethod, SecretKeyRef};
use crate::manifest::Manifests;
use crate::offline;
use crate::secret::SecretValue;
use crate::topology::{
    self, ResourceSet, SecretSource, SecretStore, auth_method, phone_secret_ref, provisioning_secret_ref,
    trunk_secret_ref,
};

/// Puts the namespace's usable Secrets into `set` and generates the missing default ones.
/// `secrets`: the labelled Secrets the controller caches (`None`: no Secrets API).
pub(crate) async fn fill(
    client: &Client,
    secrets: Option<&[Arc<Secret>]>,
    secrets_file: Option<&Path>,
    set: &mut ResourceSet,
) {
    match secrets {
        Some(cached) => {
            set.secret_source = SecretSource::Labelled;
            set.secrets.extend(usable(cached, &set.namespace));
            for (reference, owner) in missing_defaults(set) {
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

/// The Secrets of `namespace` a `secretRef` may name: labelled usable, and plain data (never a
/// service-account token, a registry credential or another typed system Secret).
fn usable(cached: &[Arc<Secret>], namespace: &str) -> SecretStore {
    let mut out = SecretStore::new();
    let opaque = |s: &Secret| s.type_.as_deref().is_none_or(|t| t == "Opaque");
    for s in cached.iter().filter(|s| {
        s.namespace().as_deref() == Some(namespace)
            && SecretRole::of(s.metadata.labels.as_ref()) == Some(SecretRole::Usable)
            && opaque(s)
    }) {
        let keys = out.entry(s.name_any()).or_default();
        for (k, v) in s.data.clone().unwrap_or_default() {
            keys.insert(k, SecretValue::new(String::from_utf8_lossy(&v.0).into_owned()));
        }
    }
    out
}

/// Creates one generated Secret, labelled usable and owned by `owner`; returns its value once
/// the server has it. One that exists already is taken over only when it is the operator's
/// (owned by the same resource, made before Secrets carried the label); anyone else's is left
/// alone and never read.
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
            owner_references: Some(vec![owner.clone()]),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
                SecretRole::Usable.label(),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(reference.key.clone(), value.expose().to_owned())])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %reference.name, %namespace, "generated a secret");
            Some(value)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => adopt(&api, reference, &owner).await,
        Err(e) => {
            tracing::warn!(secret = %reference.name, %namespace, error = %e, "could not create a generated secret");
            None
        }
    }
}

/// A default Secret that exists without the label: labels it when the operator generated it for
/// the same resource (its owner), and reads it then; says why not otherwise.
async fn adopt(api: &Api<Secret>, reference: &SecretKeyRef, owner: &OwnerReference) -> Option<SecretValue> {
    let existing = match api.get(&reference.name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(secret = %reference.name, error = %e, "could not read back a generated secret");
            return None;
        }
    };
    let ours = existing.owner_references().iter().any(|o| o.uid == owner.uid)
        && existing.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some(FIELD_MANAGER);
    if !ours {
        tracing::warn!(
            secret = %reference.name, owner = %owner.name,
            "a Secret with the default name exists and is not the operator's: it is left alone; label it asterisk.operator.dev/secret=usable to use it, or set a secretRef"
        );
        return None;
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": existing.resource_version(), "labels": BTreeMap::from([SecretRole::Usable.label()])}
    });
    if let Err(e) = api.patch(&reference.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!(secret = %reference.name, error = %e, "could not label a generated secret");
        return None;
    }
    let value = existing.data.as_ref().and_then(|d| d.get(&reference.key))?;
    Some(SecretValue::new(String::from_utf8_lossy(&value.0).into_owned()))
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

/// The default Secrets (resources without a `secretRef`) that `set` lacks, with the resource
/// that owns each. RSA key pairs are never generated.
fn missing_defaults(set: &ResourceSet) -> Vec<(SecretKeyRef, OwnerReference)> {
    let missing = |r: &SecretKeyRef| set.secrets.get(&r.name).is_none_or(|keys| !keys.contains_key(&r.key));
    let phones = set
        .phones
        .iter()
        .filter(|p| p.spec.secret_ref.is_none())
        .filter_map(|p| Some((phone_secret_ref(p), p.controller_owner_ref(&())?)));
    // A desk phone's provisioning password: always a default Secret of its own (ADR 0006).
    let devices = set
        .phones
        .iter()
        .filter(|p| p.spec.device.is_some())
        .filter_map(|p| Some((provisioning_secret_ref(p), p.controller_owner_ref(&())?)));
    let trunks = set
        .trunks
        .iter()
        .filter(|t| t.spec.auth.secret_ref.is_none() && auth_method(t) != AuthMethod::Rsa)
        .filter_map(|t| Some((trunk_secret_ref(t), t.controller_owner_ref(&())?)));
    let mut out: Vec<(SecretKeyRef, OwnerReference)> =
        phones.chain(devices).chain(trunks).filter(|(r, _)| missing(r)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0.name == b.0.name);
    out
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::controller::mock_api::{answer, mock, phone, silent};
    use crate::crd::Phone;

    fn labelled(
        name: &str,
        key: &str,
        value: &str,
        role: Option<SecretRole>,
        type_: Option<&str>,
    ) -> Arc<Secret> {
        Arc::new(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: role.map(|r| BTreeMap::from([r.label()])),
                ..ObjectMeta::default()
            },
            type_: type_.map(str::to_owned),
            data: Some(BTreeMap::from([(key.into(), k8s_openapi::ByteString(value.as_bytes().to_vec()))])),
            ..Secret::default()
        })
    }

    fn phone_with_ref(name: &str, secret: &str) -> Phone {
        let mut p = phone(name);
        // Each its own extension: 3000 + the letter's place.
        p.spec.extension = format!("30{:02}", name.as_bytes()[0] - b'a');
        p.spec.secret_ref = Some(SecretKeyRef { name: secret.into(), key: "password".into() });
        p
    }

    #[tokio::test]
    async fn a_missing_default_secret_is_generated_labelled_and_owned_by_its_phone() {
        let (client, mut handle) = mock();
        let mut set = ResourceSet {
            namespace: "default".into(),
            phones: vec![phone("reception")],
            ..Default::default()
        };
        let server = tokio::spawn(async move { answer(&mut handle, None).await });
        fill(&client, Some(&[]), None, &mut set).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::POST);
        assert!(uri.starts_with("/api/v1/namespaces/default/secrets"), "{uri}");
        assert_eq!(body["metadata"]["name"], "phone-reception");
        assert_eq!(body["metadata"]["labels"]["asterisk.operator.dev/secret"], "usable");
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

    #[test]
    fn a_desk_phone_gets_its_own_provisioning_secret_even_with_a_secret_ref() {
        let mut desk = phone_with_ref("a", "users-own");
        desk.spec.device = Some(crate::crd::Device {
            vendor: crate::crd::DeviceVendor::Yealink,
            model: "T46S".into(),
            mac: "80:5e:c0:00:00:01".into(),
        });
        let set =
            ResourceSet { namespace: "default".into(), phones: vec![desk, phone("b")], ..Default::default() };
        let names: Vec<(String, String)> =
            missing_defaults(&set).into_iter().map(|(r, owner)| (r.name, owner.name)).collect();
        // The user's own Secret is never generated; the desk phone's provisioning one is, owned by it.
        assert_eq!(
            names,
            [("phone-a.provisioning".to_owned(), "a".to_owned()), ("phone-b".to_owned(), "b".to_owned())]
        );
    }

    #[tokio::test]
    async fn only_labelled_opaque_secrets_are_read_and_an_explicit_reference_is_never_invented() {
        let cached = [
            labelled("labelled", "password", "LabelledPassword1", Some(SecretRole::Usable), Some("Opaque")),
            labelled("unlabelled", "password", "UnlabelledPassword1", None, Some("Opaque")),
            labelled("asterisk-office-a", "agent-token", "NodeToken0123456789", Some(SecretRole::Node), None),
            labelled(
                "sa-token",
                "token",
                "ServiceAccountToken1",
                Some(SecretRole::Usable),
                Some("kubernetes.io/service-account-token"),
            ),
        ];
        let (client, mut handle) = mock();
        let node = serde_json::from_value(serde_json::json!({
            "apiVersion": "asterisk.operator.dev/v1alpha1", "kind": "AsteriskNode",
            "metadata": {"name": "office-a", "namespace": "default"},
            "spec": {"numbering": {"prefixes": ["3"], "length": 4}, "agent": {"endpoint": "https://pbx:7443"}}
        }))
        .unwrap();
        let mut set = ResourceSet {
            namespace: "default".into(),
            nodes: vec![node],
            phones: vec![
                phone_with_ref("a", "labelled"),
                phone_with_ref("b", "unlabelled"),
                phone_with_ref("c", "asterisk-office-a"),
                phone_with_ref("d", "sa-token"),
                phone_with_ref("e", "not-there-yet"),
            ],
            ..Default::default()
        };
        fill(&client, Some(&cached), None, &mut set).await;
        assert!(silent(&mut handle).await, "nothing is created for an explicit reference");
        assert_eq!(set.secrets.keys().collect::<Vec<_>>(), ["labelled"], "only the usable, opaque one");

        // The resolver says the same for a Secret that does not exist and one that is not
        // labelled: the author learns nothing about Secrets they cannot read.
        let resolution = topology::resolve(&set);
        let message = |phone: &str| {
            resolution
                .errors
                .iter()
                .find(|e| e.object.name == phone)
                .map(|e| e.to_string().replace(&format!("Phone default/{phone}"), "Phone"))
                .unwrap()
        };
        let unlabelled = message("b").replace("unlabelled", "X");
        let absent = message("e").replace("not-there-yet", "X");
        assert_eq!(unlabelled, absent);
        assert!(
            absent.contains("is not available to the operator")
                && absent.contains("asterisk.operator.dev/secret=usable"),
            "{absent}"
        );
        for phone in ["c", "d"] {
            assert!(message(phone).contains("is not available to the operator"), "{}", message(phone));
        }

        // The user applies the Secret later, labelled: it is used as it is, and nothing is
        // written to it (no owner reference: it stays the user's).
        let later = [
            cached[0].clone(),
            labelled("not-there-yet", "password", "AppliedLaterPassword1", Some(SecretRole::Usable), None),
        ];
        let (client, mut handle) = mock();
        let mut again = ResourceSet { secrets: SecretStore::new(), ..set.clone() };
        fill(&client, Some(&later), None, &mut again).await;
        assert!(silent(&mut handle).await, "the user's Secret is not written to");
        assert!(topology::resolve(&again).topology.phones.contains_key("e"), "phone e resolves now");
    }
}
