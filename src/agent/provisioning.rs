//! The desk phones' provisioning files and fetch records in the gRPC messages: `Bundle` fields
//! 5–6 carry the files and their index, `NodeStatus` field 20 each phone's last fetch, which
//! the controller turns into the Phone's `status.provisioning`.

use std::collections::HashMap;

use super::proto;
use crate::crd::ProvisioningStatus;
use crate::provision::LastFetch;
use crate::render::{Provisioning, ProvisioningIndex};

/// The bundle fields of `p` (the rest of the message default).
pub fn to_proto(p: &Provisioning) -> proto::Bundle {
    if p.is_empty() {
        return proto::Bundle::default();
    }
    proto::Bundle {
        provisioning_files: p.files.clone().into_iter().collect(),
        provisioning_json: serde_json::to_string(&p.index).expect("the index serializes"),
        ..proto::Bundle::default()
    }
}

/// The provisioning files of a received bundle.
pub fn from_proto(files: HashMap<String, String>, index_json: &str) -> Result<Provisioning, String> {
    let index: ProvisioningIndex = if index_json.trim().is_empty() {
        ProvisioningIndex::default()
    } else {
        serde_json::from_str(index_json).map_err(|e| format!("provisioning index is not valid JSON: {e}"))?
    };
    Ok(Provisioning { files: files.into_iter().collect(), index })
}

impl From<&LastFetch> for proto::ProvisioningFetch {
    fn from(f: &LastFetch) -> Self {
        proto::ProvisioningFetch {
            phone: f.phone.clone(),
            file: f.file.clone(),
            source: f.source.clone(),
            protocol: f.protocol.clone(),
            user_agent: f.user_agent.clone(),
            unix_millis: f.unix_millis,
        }
    }
}

/// `phone`'s provisioning status from what its node's agent reported.
pub fn phone_status(fetches: &[proto::ProvisioningFetch], phone: &str) -> Option<ProvisioningStatus> {
    let f = fetches.iter().find(|f| f.phone == phone)?;
    let proto::ProvisioningFetch { phone, file, source, protocol, user_agent, unix_millis } = f.clone();
    Some(crate::provision::fetch::phone_status(&LastFetch {
        phone,
        file,
        source,
        protocol,
        user_agent,
        unix_millis,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeviceVendor;
    use crate::render::{Bundle, MeshPlan, ServedFile};

    #[test]
    fn a_bundle_with_provisioning_files_crosses_grpc_unchanged() {
        let mut p = Provisioning::default();
        p.files.insert("SEP001A2B3C4D5E.cnf.xml".into(), "<device/>".into());
        p.index.files.insert(
            "SEP001A2B3C4D5E.cnf.xml".into(),
            ServedFile { phone: Some("reception".into()), vendor: DeviceVendor::Cisco },
        );
        p.index.allowed_networks = vec!["10.0.0.0/8".into()];
        let plain = Bundle::new(
            "a",
            [("pjsip_operator.conf".to_owned(), "x".to_owned())].into(),
            MeshPlan::default(),
        );
        let bundle = plain.clone().with_provisioning(p);
        assert_ne!(bundle.hash, plain.hash, "the files are part of the hash");
        let back = super::super::bundle_from_proto(super::super::bundle_to_proto(&bundle)).unwrap();
        assert_eq!(back, bundle);
        let back = super::super::bundle_from_proto(super::super::bundle_to_proto(&plain)).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn only_the_phones_own_record_becomes_its_status() {
        let fetches = vec![proto::ProvisioningFetch {
            phone: "reception".into(),
            file: "SEP001A2B3C4D5E.cnf.xml".into(),
            source: "10.0.0.7".into(),
            protocol: "http".into(),
            user_agent: "Cisco-CP8845/14.1".into(),
            unix_millis: 1_000,
        }];
        let status = phone_status(&fetches, "reception").unwrap();
        assert_eq!(status.last_fetch_time.as_deref(), Some("1970-01-01T00:00:01Z"));
        assert_eq!(status.user_agent.as_deref(), Some("Cisco-CP8845/14.1"));
        assert_eq!(phone_status(&fetches, "lobby"), None);
    }
}
