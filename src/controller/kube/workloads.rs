//! Do: each node's Secret and managed workload as [`super::workload_plan`] decided it — the
//! namespace's mesh CA, the node's Secret (its own agent credentials; created once, only its
//! mesh keys are ever written again), then a managed node's headless Service and StatefulSet by
//! server-side apply; the StatefulSet's status gives the `Managed` condition, and the Secret's
//! credentials how the controller reaches the agent. Every API error becomes a
//! [`WorkloadError`] on that node alone; the fleet goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

use super::discovery::{
    SECRETS_API, SERVICES_API, STATEFULSETS_API, WorkloadApis, not_served, not_served_status,
};
use super::names::FIELD_MANAGER;
use super::workload_plan::{
    CaPlan, ObjectStep, SecretStep, WorkloadError, WorkloadInputs, WorkloadPlan, plan_mesh_ca, plan_workload,
};
use crate::controller::fleet::AgentTarget;
use crate::controller::managed;
use crate::controller::managed_settings::ManagedSettings;
use crate::controller::mesh_pki::{self, MeshCa};
use crate::controller::secret_roles::SecretRole;
use crate::crd::{AsteriskNode, namespace_of};
use crate::offline::LoadedFleet;
use crate::topology::managed_workload_name;

/// The managed nodes' workloads across passes: which APIs the server serves, and what was
/// last applied for each node (so an unchanged workload costs one GET, not two patches).
#[derive(Debug, Default)]
pub(crate) struct Workloads {
    apis: WorkloadApis,
    /// (namespace, node) → hash of the Service and StatefulSet applied, and when.
    applied: BTreeMap<(String, String), (String, Instant)>,
}

impl Workloads {
    /// Gives every node of `fleets` its Secret (its own agent credentials and mesh keys) and
    /// every managed node its workload, and says, per node, how the controller can reach its
    /// agent (or why not). Without a Secrets API, nodes beside an existing server get no target
    /// here (their credentials come from the secrets file).
    pub async fn reconcile(
        &mut self,
        client: &Client,
        secrets: Option<&[Arc<Secret>]>,
        fleets: &BTreeMap<String, LoadedFleet>,
        settings: &ManagedSettings,
    ) -> BTreeMap<(String, String), AgentTarget> {
        let mut targets = BTreeMap::new();
        let nodes: Vec<(&String, &AsteriskNode, bool)> = fleets
            .iter()
            .flat_map(|(ns, f)| {
                f.resources
                    .nodes
                    .iter()
                    .filter(|n| n.spec.managed.is_some() || secrets.is_some())
                    .map(move |n| (ns, n, f.resolution.topology.nodes.contains_key(&n.name_any())))
            })
            .collect();
        self.applied.retain(|key, _| nodes.iter().any(|(ns, n, _)| key.0 == **ns && key.1 == n.name_any()));
        if nodes.is_empty() {
            return targets;
        }
        let missing = self.apis.missing(client, secrets.is_some()).await;
        // The namespace's mesh CA, read (or created) once per pass for all its nodes.
        let mut cas: BTreeMap<String, Result<MeshCa, WorkloadError>> = BTreeMap::new();
        for (ns, node, valid) in nodes {
            let key = (ns.clone(), node.name_any());
            let managed = node.spec.managed.is_some();
            // A node beside an existing server needs only its Secret.
            let needed: Vec<String> =
                missing.iter().filter(|m| managed || m.starts_with(SECRETS_API)).cloned().collect();
            let ca = match (cas.get(ns), secrets) {
                (Some(ca), _) => ca.clone(),
                (None, Some(store)) if valid && needed.is_empty() => {
                    let ca = self.mesh_ca(client, store, ns, settings).await;
                    cas.insert(ns.clone(), ca.clone());
                    ca
                }
                _ => Err(WorkloadError::Pending("the namespace's mesh CA is not read yet".into())),
            };
            let cached_secret =
                secrets.and_then(|s| cached(s, ns, &managed_workload_name(&key.1), SecretRole::Node));
            let plan = plan_workload(WorkloadInputs {
                node,
                valid,
                missing_apis: &needed,
                ca: &ca,
                secret: cached_secret.as_ref(),
                last_applied: self.applied.get(&key).map(|(h, at)| (h.as_str(), at.elapsed())),
                settings,
                now: SystemTime::now(),
            });
            let target = match plan {
                Ok(plan) => self.run(client, node, plan).await,
                Err(e) => Err(e),
            };
            let target = target.unwrap_or_else(|e| AgentTarget {
                managed: managed.then(|| e.to_condition()),
                access: Err(e.to_string()),
            });
            targets.insert(key, target);
        }
        targets
    }

    /// The namespace's mesh CA: the cached `asterisk-mesh-ca`, or a new one, created once.
    async fn mesh_ca(
        &mut self,
        client: &Client,
        secrets: &[Arc<Secret>],
        ns: &str,
        settings: &ManagedSettings,
    ) -> Result<MeshCa, WorkloadError> {
        let cached = cached(secrets, ns, mesh_pki::CA_SECRET, SecretRole::MeshCa);
        match plan_mesh_ca(ns, cached.as_ref(), settings, SystemTime::now())? {
            CaPlan::Use(ca) => Ok(ca),
            CaPlan::Create(ca, secret) => {
                self.create(client, &secret, "the namespace's mesh CA").await?;
                Ok(ca)
            }
        }
    }

    /// Performs one node's plan.
    async fn run(
        &mut self,
        client: &Client,
        node: &AsteriskNode,
        plan: WorkloadPlan,
    ) -> Result<AgentTarget, WorkloadError> {
        let ns = namespace_of(node.meta());
        let name = node.name_any();
        let workload = managed_workload_name(&name);
        match plan.secret {
            SecretStep::Keep => {}
            SecretStep::Create(secret) => self.create(client, &secret, "the node's Secret").await?,
            SecretStep::WriteMeshKeys { patch, reissued } => {
                self.write_mesh_keys(client, &ns, &workload, &patch, reissued).await?
            }
        }
        let managed = plan.objects.is_some();
        let access = Ok(plan.credentials.agent_access(&ns, &name, managed));
        if let Some(problem) = &plan.mesh_problem {
            tracing::warn!(node = %name, namespace = %ns, error = %problem, "the mesh CA is unusable: the node's mesh keys are not renewed; configuration still flows");
        }
        let Some(objects) = plan.objects else { return Ok(AgentTarget { managed: None, access }) };
        let key = (ns.clone(), name.clone());
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let (result, applied) = match objects {
            ObjectStep::Observe => (sts_api.get_status(&workload).await, None),
            ObjectStep::Apply { service, stateful_set, hash } => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
                let result = match svc_api.patch(&workload, &params, &Patch::Apply(&*service)).await {
                    Ok(_) => sts_api.patch(&workload, &params, &Patch::Apply(&*stateful_set)).await,
                    Err(e) if not_served(&e) => {
                        self.apis.lost(SERVICES_API);
                        return Err(WorkloadError::ApiUnavailable(vec![SERVICES_API.into()]));
                    }
                    Err(e) => Err(e),
                };
                (result, Some(hash))
            }
        };
        match result {
            Ok(sts) => {
                if let Some(hash) = applied {
                    tracing::info!(node = %name, namespace = %ns, statefulset = %workload, "applied the managed node's Service and StatefulSet");
                    self.applied.insert(key, (hash, Instant::now()));
                }
                // The pod's state, unless the mesh CA needs attention (which stops nothing else).
                let condition = match plan.mesh_problem {
                    Some(problem) => problem.to_condition(),
                    None => managed::workload_condition(&name, sts.status.as_ref()),
                };
                Ok(AgentTarget { managed: Some(condition), access })
            }
            Err(kube::Error::Api(s)) if s.code == 404 && applied.is_none() && !not_served_status(&s) => {
                // Deleted behind our back: apply it again next pass.
                self.applied.remove(&key);
                Err(WorkloadError::Pending(format!("StatefulSet {ns}/{workload} is gone; re-creating it")))
            }
            Err(e) if not_served(&e) => {
                self.apis.lost(STATEFULSETS_API);
                Err(WorkloadError::ApiUnavailable(vec![STATEFULSETS_API.into()]))
            }
            Err(e) => {
                self.applied.remove(&key);
                tracing::warn!(node = %name, namespace = %ns, error = %e, "could not apply the managed node's workload");
                Err(WorkloadError::ApplyFailed(format!("StatefulSet/Service {ns}/{workload}: {e}")))
            }
        }
    }

    /// Writes the mesh keys of `patch` into Secret `ns/name` (a merge patch guarded by the
    /// resourceVersion it carries: a Secret changed since it was read is left for next pass).
    async fn write_mesh_keys(
        &mut self,
        client: &Client,
        ns: &str,
        name: &str,
        patch: &serde_json::Value,
        reissued: Option<String>,
    ) -> Result<(), WorkloadError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match api.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => {
                match reissued {
                    Some(why) => {
                        tracing::warn!(secret = %name, namespace = %ns, reason = %why, "re-issued the managed node's mesh certificate")
                    }
                    None => {
                        tracing::info!(secret = %name, namespace = %ns, "added a mesh certificate to the managed node's Secret")
                    }
                }
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 || (s.code == 404 && !not_served_status(&s)) => {
                Err(WorkloadError::Pending(format!(
                    "Secret {ns}/{name} changed since the controller read it; adding its mesh keys next pass"
                )))
            }
            Err(e) => Err(self.refused(e, format!("updating the mesh keys of Secret {ns}/{name}"))),
        }
    }

    /// Creates `secret` (never replaces one: a Secret that exists already is left alone, or
    /// labelled when it is the operator's own from before Secrets carried the label).
    async fn create(&mut self, client: &Client, secret: &Secret, what: &str) -> Result<(), WorkloadError> {
        let ns = namespace_of(secret.meta());
        let name = secret.name_any();
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match api.create(&params, secret).await {
            Ok(_) => {
                tracing::info!(secret = %name, namespace = %ns, "generated {what}");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(self.adopt(&api, secret).await),
            Err(e) => Err(self.refused(e, format!("creating Secret {ns}/{name} ({what})"))),
        }
    }

    /// `wanted` exists already without the label the controller watches for. It is labelled
    /// when it is the operator's (owned by the same node, or the mesh CA the operator made);
    /// anyone else's is never touched, and the condition says what to do.
    async fn adopt(&mut self, api: &Api<Secret>, wanted: &Secret) -> WorkloadError {
        let (ns, name) = (namespace_of(wanted.meta()), wanted.name_any());
        let existing = match api.get(&name).await {
            Ok(s) => s,
            Err(e) => return self.refused(e, format!("reading Secret {ns}/{name}")),
        };
        let role = SecretRole::of(wanted.metadata.labels.as_ref()).unwrap_or(SecretRole::Node);
        if SecretRole::of(existing.metadata.labels.as_ref()) == Some(role) {
            return WorkloadError::Pending(format!(
                "Secret {ns}/{name} exists but is not in the controller's cache yet; retrying"
            ));
        }
        let owned = |s: &Secret| s.owner_references().iter().map(|o| o.uid.clone()).collect::<Vec<_>>();
        let managed_by = |s: &Secret| s.labels().get("app.kubernetes.io/managed-by").cloned();
        let ours = managed_by(&existing).is_some()
            && managed_by(&existing) == managed_by(wanted)
            && owned(wanted).iter().all(|uid| owned(&existing).contains(uid));
        if !ours {
            return match role {
                SecretRole::MeshCa => WorkloadError::MeshCa(format!(
                    "Secret {ns}/{name} exists without the label {}={}: label it to use it as the namespace's mesh CA (ca.crt, ca.key), or delete it to have one generated",
                    crate::controller::secret_roles::LABEL,
                    role.as_str()
                )),
                _ => WorkloadError::ApplyFailed(format!(
                    "Secret {ns}/{name} exists and is not this node's (no owner reference to it): rename or delete it, and the controller generates the node's credentials"
                )),
            };
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": existing.resource_version(), "labels": BTreeMap::from([role.label()])}
        });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(secret = %name, namespace = %ns, "labelled the operator's own Secret so it is watched");
                WorkloadError::Pending(format!(
                    "Secret {ns}/{name} labelled {}; it is read next pass",
                    role.as_str()
                ))
            }
            Err(e) => self.refused(e, format!("labelling Secret {ns}/{name}")),
        }
    }

    /// A Secret write the server refused: the Secrets API is gone, or `doing` failed.
    fn refused(&mut self, e: kube::Error, doing: String) -> WorkloadError {
        if not_served(&e) {
            self.apis.lost(SECRETS_API);
            return WorkloadError::ApiUnavailable(vec![SECRETS_API.into()]);
        }
        tracing::warn!(error = %e, "{doing} failed");
        WorkloadError::ApplyFailed(format!("{doing}: {e}"))
    }
}

/// The Secret `name` of namespace `ns` in the controller's cache, when it is labelled for `role`.
pub(super) fn cached(secrets: &[Arc<Secret>], ns: &str, name: &str, role: SecretRole) -> Option<Secret> {
    secrets
        .iter()
        .find(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.name_any() == name
                && SecretRole::of(s.metadata.labels.as_ref()) == Some(role)
        })
        .map(|s| (**s).clone())
}

#[cfg(test)]
mod tests {
    //! The workload step against kube-rs's mocked API service (the real test server has no
    //! Secrets, Services or StatefulSets).

    use std::time::Duration;

    use http::Method;
    use serde_json::Value;

    use super::*;
    use crate::controller::agent_policy::AgentPolicy;
    use crate::controller::credentials::{self, NodeCredentials};
    use crate::controller::fleet::FleetReconciler;
    use crate::controller::mesh_pki::{LeafCheck, MeshLeaf};
    use crate::controller::mock_api::{
        answer, managed_node, managed_settings, mock, not_found, resource_list, respond, silent,
    };
    use crate::render;
    use crate::topology::{self, Kind, ObjectRef, ResourceSet};

    /// One fleet with the managed node office-a (as read from the API server: it has a uid).
    fn managed_fleet() -> BTreeMap<String, LoadedFleet> {
        let node = managed_node();
        let resources = ResourceSet { namespace: "default".into(), nodes: vec![node], ..Default::default() };
        let resolution = topology::resolve(&resources);
        let bundles = render::render_all(&resolution.topology);
        BTreeMap::from([("default".to_owned(), LoadedFleet { resources, resolution, bundles })])
    }

    const KEY: (&str, &str) = ("default", "office-a");

    fn key() -> (String, String) {
        (KEY.0.to_owned(), KEY.1.to_owned())
    }

    #[tokio::test]
    async fn a_managed_node_gets_its_secret_once_and_its_workload_by_server_side_apply() {
        let (client, mut handle) = mock();
        let mut store: Vec<Arc<Secret>> = Vec::new();
        let fleets = managed_fleet();
        let server = tokio::spawn(async move {
            let core = answer(&mut handle, Some(resource_list("v1", &["secrets", "services", "pods"]))).await;
            let apps = answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await;
            let ca = answer(&mut handle, None).await;
            let secret = answer(&mut handle, None).await;
            let service = answer(&mut handle, None).await;
            let sts = respond(&mut handle, 200, |body| {
                let mut b = body.clone();
                b["status"] = serde_json::json!({"replicas": 1, "readyReplicas": 1});
                b
            })
            .await;
            (vec![core, apps, ca, secret, service, sts], handle)
        });
        let mut workloads = Workloads::default();
        let targets = workloads.reconcile(&client, Some(&store[..]), &fleets, &managed_settings()).await;
        let (seen, mut handle) = server.await.unwrap();
        let uris: Vec<(&Method, &str)> =
            seen.iter().map(|(m, u, _)| (m, u.split('?').next().unwrap())).collect();
        assert_eq!(
            uris,
            [
                (&Method::GET, "/api/v1"),
                (&Method::GET, "/apis/apps/v1"),
                (&Method::POST, "/api/v1/namespaces/default/secrets"),
                (&Method::POST, "/api/v1/namespaces/default/secrets"),
                (&Method::PATCH, "/api/v1/namespaces/default/services/asterisk-office-a"),
                (&Method::PATCH, "/apis/apps/v1/namespaces/default/statefulsets/asterisk-office-a"),
            ]
        );
        // Server-side apply under the controller's field manager.
        for (_, uri, _) in &seen[4..] {
            assert!(uri.contains("fieldManager=asterisk-operator") && uri.contains("force=true"), "{uri}");
        }
        // The namespace's mesh CA first: generated, shared by the fleet (no owner reference).
        let (_, _, ca_body) = &seen[2];
        assert_eq!(ca_body["metadata"]["name"], mesh_pki::CA_SECRET);
        assert!(ca_body["metadata"].get("ownerReferences").is_none(), "{}", ca_body["metadata"]);
        let mut ca_secret: Secret = serde_json::from_value(ca_body.clone()).unwrap();
        ca_secret.metadata.namespace = Some("default".into());
        let ca = MeshCa::from_secret(&ca_secret, SystemTime::now()).expect("a usable CA");
        let (_, _, secret) = &seen[3];
        assert_eq!(secret["metadata"]["name"], "asterisk-office-a");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-node");
        for k in [
            credentials::AMI_SECRET_KEY,
            credentials::AGENT_TOKEN_KEY,
            credentials::TLS_CERT_KEY,
            credentials::TLS_KEY_KEY,
        ] {
            assert!(secret["data"][k].is_string(), "{k} in {secret}");
        }
        // The node's mesh certificate, signed by that CA, naming the node.
        let node_secret: Secret = serde_json::from_value(secret.clone()).unwrap();
        let LeafCheck::Current(leaf) = mesh_pki::check_leaf(&node_secret, &ca, "office-a", SystemTime::now())
        else {
            panic!(
                "the node's mesh certificate does not verify: {:?}",
                secret["data"].as_object().map(|d| d.keys().collect::<Vec<_>>())
            )
        };
        let (_, _, service) = &seen[4];
        assert_eq!((service["apiVersion"].as_str(), service["kind"].as_str()), (Some("v1"), Some("Service")));
        assert_eq!(service["spec"]["clusterIP"], "None");
        let ports: Vec<(&str, i64)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["port"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, [("grpc", 7443), ("metrics", 9090), ("mesh", 7444), ("provisioning", 6970)]);
        let (_, _, sts) = &seen[5];
        assert_mesh_in_pod(sts, &leaf);
        assert_eq!(
            (sts["apiVersion"].as_str(), sts["kind"].as_str()),
            (Some("apps/v1"), Some("StatefulSet"))
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let names: Vec<&str> =
            pod["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["asterisk", "agent"]);
        let sts_text = sts.to_string();
        let token_bytes: k8s_openapi::ByteString =
            serde_json::from_value(secret["data"][credentials::AGENT_TOKEN_KEY].clone()).unwrap();
        let token = String::from_utf8(token_bytes.0).unwrap();
        assert!(!sts_text.contains(&token), "the token stays in the Secret");

        let target = &targets[&key()];
        let condition = target.managed.as_ref().unwrap();
        assert_eq!((condition.status, condition.reason.as_str()), (true, "Running"));
        let access = target.access.as_ref().expect("the agent is reachable");
        assert_eq!(access.token.as_ref().unwrap().expose(), token, "pushes carry the node's own token");

        // Next pass: the Secret is in the cache now and the workload unchanged: no Secret is
        // created again, one GET of the StatefulSet's status replaces the two patches.
        let mut stored: Secret = serde_json::from_value(secret.clone()).unwrap();
        stored.metadata.namespace = Some("default".into());
        store.extend([Arc::new(stored), Arc::new(ca_secret)]);
        let server = tokio::spawn(async move {
            let get = respond(&mut handle, 200, |_| {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "asterisk-office-a", "namespace": "default"},
                    "status": {"replicas": 1, "readyReplicas": 0}})
            })
            .await;
            (get, handle)
        });
        let targets = workloads.reconcile(&client, Some(&store[..]), &fleets, &managed_settings()).await;
        let ((method, uri, _), mut handle) = server.await.unwrap();
        assert_eq!(
            (method, uri.as_str()),
            (Method::GET, "/apis/apps/v1/namespaces/default/statefulsets/asterisk-office-a/status")
        );
        let target = &targets[&key()];
        let condition = target.managed.as_ref().unwrap();
        assert_eq!((condition.status, condition.reason.as_str()), (false, "Starting"));
        assert_eq!(target.access.as_ref().unwrap().token.as_ref().unwrap().expose(), token, "same secret");
        assert!(silent(&mut handle).await, "nothing else was sent");
    }

    /// The agent container of a StatefulSet (as sent) runs the mesh on 7444 with the files of
    /// the mounted Secret, and nothing of `leaf` is in the pod template (a renewal must not roll
    /// the pod: the agent reloads the files).
    fn assert_mesh_in_pod(sts: &Value, leaf: &MeshLeaf) {
        let template = &sts["spec"]["template"];
        assert!(template["metadata"].get("annotations").is_none(), "{}", template["metadata"]);
        for line in leaf.cert_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !sts.to_string().contains(line),
                "no part of the mesh certificate is in the pod template"
            );
        }
        let agent =
            template["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "agent").unwrap();
        let args: Vec<&str> = agent["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        for pair in [
            ["--mesh-listen", "0.0.0.0:7444"],
            ["--mesh-ca", "/run/secrets/asterisk-operator/mesh-ca.crt"],
            ["--mesh-cert", "/run/secrets/asterisk-operator/mesh.crt"],
            ["--mesh-key", "/run/secrets/asterisk-operator/mesh.key"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
        }
        let ports: Vec<(&str, i64)> = agent["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, [("grpc", 7443), ("metrics", 9090), ("mesh", 7444), ("provisioning", 6970)]);
        let text = sts.to_string();
        for line in leaf.key_pem.expose().lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "the mesh key stays in the Secret");
        }
    }

    /// `office-a`'s Secret as a controller before the mesh made it (no mesh keys), as cached.
    fn pre_mesh_secret() -> Secret {
        let fleets = managed_fleet();
        let node = &fleets["default"].resources.nodes[0];
        let creds = NodeCredentials::generate("default", "office-a", true).unwrap();
        let leaf = MeshCa::generate("default", SystemTime::now())
            .unwrap()
            .issue("office-a", SystemTime::now())
            .unwrap();
        let mut secret = managed::secret(node, &creds, Some(&leaf), &managed_settings()).unwrap();
        for k in mesh_pki::MESH_KEYS {
            secret.data.as_mut().unwrap().remove(k);
        }
        secret.metadata.resource_version = Some("7".into());
        secret
    }

    #[tokio::test]
    async fn a_user_mesh_ca_is_reused_and_node_secrets_get_only_their_mesh_keys_written() {
        let now = SystemTime::now();
        let user_ca = MeshCa::generate("default", now).unwrap();
        let mut ca_secret = mesh_pki::ca_secret("default", &user_ca, &managed_settings());
        // The user's own (not the controller's), labelled so the controller may read it.
        ca_secret.metadata.labels = Some(BTreeMap::from([SecretRole::MeshCa.label()]));
        let old = pre_mesh_secret();
        let mut foreign = old.clone();
        let foreign_leaf = MeshCa::generate("default", now).unwrap().issue("office-a", now).unwrap();
        foreign.data.as_mut().unwrap().extend(foreign_leaf.data());
        let current = {
            let mut s = old.clone();
            s.data.as_mut().unwrap().extend(user_ca.issue("office-a", now).unwrap().data());
            s
        };
        for (case, node_secret, written) in [
            ("pre-mesh Secret", &old, true),
            ("leaf of another CA", &foreign, true),
            ("current leaf", &current, false),
        ] {
            let (client, mut handle) = mock();
            let store = [Arc::new(ca_secret.clone()), Arc::new(node_secret.clone())];
            let server = tokio::spawn(async move {
                let mut seen = vec![
                    answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await,
                    answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await,
                ];
                for _ in 0..if written { 3 } else { 2 } {
                    seen.push(answer(&mut handle, None).await);
                }
                assert!(silent(&mut handle).await, "nothing else was sent");
                seen
            });
            let mut workloads = Workloads::default();
            let targets =
                workloads.reconcile(&client, Some(&store[..]), &managed_fleet(), &managed_settings()).await;
            let seen = server.await.unwrap();
            assert!(seen.iter().all(|(m, _, _)| m != Method::POST), "{case}: no Secret is created: {seen:?}");
            let target = &targets[&key()];
            assert!(target.access.is_ok(), "{case}: {:?}", target.managed);
            let creds = NodeCredentials::from_secret(&old).unwrap();
            assert_eq!(target.access.as_ref().unwrap().token.as_ref(), Some(&creds.agent_token), "{case}");
            let leaf = if written {
                let (method, uri, patch) = &seen[2];
                assert_eq!(
                    (method, uri.split('?').next().unwrap()),
                    (&Method::PATCH, "/api/v1/namespaces/default/secrets/asterisk-office-a"),
                    "{case}"
                );
                assert!(uri.contains("fieldManager=asterisk-operator"), "{uri}");
                assert_eq!(patch["metadata"], serde_json::json!({"resourceVersion": "7"}), "{case}: guarded");
                let keys: Vec<&String> = patch["data"].as_object().unwrap().keys().collect();
                assert_eq!(keys, ["mesh-ca.crt", "mesh.crt", "mesh.key"], "{case}: only the mesh keys");
                let mut patched = old.clone();
                patched.data.as_mut().unwrap().extend(
                    serde_json::from_value::<BTreeMap<String, k8s_openapi::ByteString>>(
                        patch["data"].clone(),
                    )
                    .unwrap(),
                );
                match mesh_pki::check_leaf(&patched, &user_ca, "office-a", now) {
                    LeafCheck::Current(leaf) => leaf,
                    other => panic!("{case}: the written leaf is not the user CA's: {other:?}"),
                }
            } else {
                MeshLeaf::from_secret(&current).unwrap()
            };
            let (_, _, sts) = seen.last().unwrap();
            assert_mesh_in_pod(sts, &leaf);
        }
    }

    #[tokio::test]
    async fn an_unusable_mesh_ca_is_a_condition_and_nothing_is_written() {
        let (client, mut handle) = mock();
        let ca = MeshCa::generate("default", SystemTime::now()).unwrap();
        let mut ca_secret = mesh_pki::ca_secret("default", &ca, &managed_settings());
        ca_secret.data.as_mut().unwrap().remove(mesh_pki::CA_KEY_KEY);
        let store = [Arc::new(ca_secret)];
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await;
            answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await;
            assert!(silent(&mut handle).await, "nothing is created or applied");
        });
        let targets = Workloads::default()
            .reconcile(&client, Some(&store[..]), &managed_fleet(), &managed_settings())
            .await;
        server.await.unwrap();
        let c = targets[&key()].managed.as_ref().unwrap();
        assert_eq!((c.status, c.reason.as_str()), (false, "MeshCAInvalid"));
        assert!(c.message.starts_with("Secret default/asterisk-mesh-ca: data.ca.key is missing"), "{c:?}");

        // A node that runs already: its workload and its pushes go on with its Secret's
        // credentials; only its mesh keys wait for a usable CA, and the condition says so.
        let (client, mut handle) = mock();
        let creds = NodeCredentials::generate("default", "office-a", true).unwrap();
        let leaf = ca.issue("office-a", SystemTime::now()).unwrap();
        let mut node_secret =
            managed::secret(&managed_node(), &creds, Some(&leaf), &managed_settings()).unwrap();
        node_secret.metadata.namespace = Some("default".into());
        let store = [store[0].clone(), Arc::new(node_secret)];
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await;
            answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await;
            let mut seen = Vec::new();
            for _ in 0..2 {
                let next = tokio::time::timeout(Duration::from_secs(5), answer(&mut handle, None)).await;
                seen.push(next.unwrap_or_else(|_| panic!("a request did not come; seen {seen:?}")));
            }
            assert!(silent(&mut handle).await, "nothing else: the Secret is left alone");
            seen
        });
        let targets = Workloads::default()
            .reconcile(&client, Some(&store[..]), &managed_fleet(), &managed_settings())
            .await;
        let seen = server.await.unwrap();
        let patched: Vec<&str> =
            seen.iter().filter(|(m, _, _)| m == Method::PATCH).map(|(_, u, _)| u.as_str()).collect();
        assert_eq!(patched.len(), 2, "Service and StatefulSet applied: {patched:?}");
        let target = &targets[&key()];
        assert_eq!(target.access.as_ref().unwrap().token.as_ref(), Some(&creds.agent_token), "pushes go on");
        assert_eq!(target.managed.as_ref().unwrap().reason, "MeshCAInvalid");
    }

    #[tokio::test]
    async fn a_server_without_apps_v1_degrades_to_a_condition() {
        let (client, mut handle) = mock();
        let store: Vec<Arc<Secret>> = Vec::new();
        let fleets = managed_fleet();
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await;
            let apps = respond(&mut handle, 404, |_| not_found()).await;
            (apps, handle)
        });
        let mut workloads = Workloads::default();
        let targets = workloads.reconcile(&client, Some(&store[..]), &fleets, &managed_settings()).await;
        let ((_, uri, _), mut handle) = server.await.unwrap();
        assert_eq!(uri, "/apis/apps/v1");
        let target = &targets[&key()];
        let condition = target.managed.as_ref().unwrap();
        assert_eq!(condition.type_, "Managed");
        assert_eq!((condition.status, condition.reason.as_str()), (false, "WorkloadAPIUnavailable"));
        assert!(condition.message.contains("does not serve apps/v1 StatefulSets"), "{condition:?}");
        assert!(!condition.message.contains("v1 Secrets"), "only what is missing is named");
        assert!(target.access.is_err(), "nothing to push to");
        assert!(silent(&mut handle).await, "no Secret or Service is created for a workload that cannot run");

        // The next pass, within the rediscovery interval, asks nothing and says the same.
        let again = workloads.reconcile(&client, Some(&store[..]), &fleets, &managed_settings()).await;
        assert_eq!(again[&key()].managed, target.managed);

        // The fleet: the node is not pushed to, and its status says why.
        let mut fleet = FleetReconciler::new(AgentPolicy::default());
        fleet.set_targets(again);
        fleet.reconcile(&fleets).await;
        let status = &fleet.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", "office-a")];
        let applied = status.conditions().iter().find(|c| c.type_ == "ConfigApplied").unwrap();
        assert_eq!(applied.reason, "NoAgent");
        assert!(applied.message.contains("apps/v1 StatefulSets"), "{applied:?}");
        let managed = status.conditions().iter().find(|c| c.type_ == "Managed").unwrap();
        assert_eq!((managed.status.as_str(), managed.reason.as_str()), ("False", "WorkloadAPIUnavailable"));
    }

    #[tokio::test]
    async fn without_a_cluster_a_managed_node_says_it_needs_one() {
        let fleets = managed_fleet();
        let mut fleet = FleetReconciler::new(AgentPolicy::default());
        let report = fleet.reconcile(&fleets).await;
        assert_eq!(report.pushed.get("default/office-a"), Some(&false));
        let status = &fleet.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", "office-a")];
        let managed = status.conditions().iter().find(|c| c.type_ == "Managed").unwrap();
        assert_eq!((managed.status.as_str(), managed.reason.as_str()), ("False", "NeedsCluster"));
        let ready = status.conditions().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
    }
}
