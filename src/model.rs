//! Domain values shared by every layer: ARM ids, MACs, and the state of a NIC
//! as far as attribution cares (its id, MAC, VM and private IPs per VNet).
//!
//! Nothing here does I/O. Parsers in `azure/` produce these values; the engine
//! consumes them.

pub mod hash;
mod named;

pub use named::{NicInfo, VmInfo};

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An Azure Resource Manager id. Azure spells the same id in several casings
/// (upper-case in flow logs and Activity Log exports, ARM casing elsewhere), so
/// ids compare by a lower-cased key while the original spelling is kept for
/// display.
///
/// Both spellings are shared (`Arc`): a clone costs no allocation, so the
/// claims of one NIC, or of one VNet, can hold one copy of its ids (see
/// `index`), and an id already in lower case is held once.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct ArmId {
    raw: Arc<str>,
    key: Arc<str>,
}

/// Why a string is not an ARM id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Azure resource id ({0}): expected /subscriptions/<guid>/...")]
pub struct ArmIdError(&'static str);

impl ArmId {
    /// Parses an id that starts with `/subscriptions/<id>`. Trailing slashes are
    /// dropped; casing is kept as given.
    pub fn parse(s: &str) -> Result<Self, ArmIdError> {
        let raw = s.trim().trim_end_matches('/');
        if raw.is_empty() {
            return Err(ArmIdError("empty"));
        }
        // Postgres text cannot hold one, and no Azure name has one.
        if raw.contains('\0') {
            return Err(ArmIdError("contains a NUL character"));
        }
        let mut parts = raw.split('/');
        if parts.next() != Some("") {
            return Err(ArmIdError("does not start with '/'"));
        }
        match parts.next() {
            Some(p) if p.eq_ignore_ascii_case("subscriptions") => {}
            _ => return Err(ArmIdError("does not start with /subscriptions")),
        }
        match parts.next() {
            Some(p) if !p.is_empty() => {}
            _ => return Err(ArmIdError("no subscription id")),
        }
        if raw.split('/').skip(1).any(str::is_empty) {
            return Err(ArmIdError("empty path segment"));
        }
        let raw: Arc<str> = Arc::from(raw);
        let key = if raw.bytes().any(|b| b.is_ascii_uppercase()) {
            Arc::from(raw.to_ascii_lowercase())
        } else {
            raw.clone()
        };
        Ok(Self { raw, key })
    }

    /// The original spelling.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The case-insensitive key (lower case).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The shared key itself.
    pub fn shared_key_ref(&self) -> &Arc<str> {
        &self.key
    }

    /// The key as a shared string (a copy costs no allocation).
    pub fn shared_key(&self) -> Arc<str> {
        self.key.clone()
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        self.raw.split('/').skip(1)
    }

    /// The value that follows the segment named `name` (case-insensitive), e.g.
    /// `segment("resourceGroups")`.
    pub fn segment(&self, name: &str) -> Option<&str> {
        let mut it = self.segments();
        while let Some(s) = it.next() {
            if s.eq_ignore_ascii_case(name) {
                return it.next();
            }
        }
        None
    }

    /// The subscription id, lower-cased (GUIDs arrive in both casings).
    pub fn subscription(&self) -> String {
        self.segment("subscriptions")
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// The subscription id of a [`key`](Self::key) (as
    /// [`subscription`](Self::subscription) gives it), read off the key
    /// alone: a key is `/subscriptions/<id>/...` in lower case.
    pub fn subscription_of_key(key: &str) -> &str {
        key.split('/').nth(2).unwrap_or_default()
    }

    /// The resource group as spelled in the id.
    pub fn resource_group(&self) -> Option<&str> {
        self.segment("resourceGroups")
    }

    /// The last segment: the resource's own name.
    pub fn name(&self) -> &str {
        self.raw.rsplit('/').next().unwrap_or_default()
    }

    /// The id cut after the value of segment `name`, e.g. a subnet id cut after
    /// `virtualNetworks` is the VNet id.
    pub fn truncate_after(&self, name: &str) -> Option<ArmId> {
        let end = cut_after(&self.raw, name)?;
        ArmId::parse(&self.raw[..end]).ok()
    }

    /// The key cut as [`ArmId::truncate_after`] cuts the id, without
    /// allocating: a subnet's key through `virtualnetworks/<name>` is its
    /// VNet's key.
    pub fn key_through(&self, name: &str) -> Option<&str> {
        // The key is the id lower-cased: the same bytes at the same offsets.
        cut_after(&self.key, name).map(|end| &self.key[..end])
    }
}

/// The byte offset at which `id` ends the value of its segment `name`
/// (compared case-insensitively), if it has one.
fn cut_after(id: &str, name: &str) -> Option<usize> {
    let mut found = false;
    // Walk segments while tracking the byte offset.
    let mut offset = 0usize;
    for seg in id.split('/') {
        offset += seg.len();
        if found {
            return Some(offset);
        }
        if seg.eq_ignore_ascii_case(name) && offset > 0 {
            found = true;
        }
        offset += 1; // the '/'
    }
    None
}

impl PartialEq for ArmId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for ArmId {}
impl std::hash::Hash for ArmId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}
impl PartialOrd for ArmId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ArmId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}
impl fmt::Display for ArmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}
impl TryFrom<String> for ArmId {
    type Error = ArmIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ArmId::parse(&s)
    }
}
/// Serialised as its original spelling (borrowed: `into = "String"` would
/// clone both strings of every id serialised).
impl Serialize for ArmId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl From<ArmId> for String {
    fn from(id: ArmId) -> String {
        id.raw.to_string()
    }
}

/// A MAC address normalised to 12 upper-case hex digits with no separators,
/// the form NSG and VNet flow logs use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(String);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: expected 12 hex digits, optionally separated by '-' or ':'")]
pub struct MacError;

impl Mac {
    /// Accepts `000D3AF87856`, `00-0D-3A-F8-78-56`, `00:0d:3a:f8:78:56`, any case.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let s = s.trim();
        let mut out = String::with_capacity(12);
        let bytes = s.as_bytes();
        let sep = if bytes.len() == 17 {
            let c = bytes[2];
            if c != b'-' && c != b':' {
                return Err(MacError);
            }
            Some(c)
        } else if bytes.len() == 12 {
            None
        } else {
            return Err(MacError);
        };
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(sep) = sep
                && i % 3 == 2
            {
                if b != sep {
                    return Err(MacError);
                }
                continue;
            }
            if !b.is_ascii_hexdigit() {
                return Err(MacError);
            }
            out.push(b.to_ascii_uppercase() as char);
        }
        Ok(Mac(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for Mac {
    type Error = MacError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Mac::parse(&s)
    }
}
impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.0
    }
}

/// One private IP (or prefix) a NIC holds through one ip configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    /// The address, or the prefix when ARM gives `a.b.c.d/len`. A single
    /// address is a host prefix (/32 or /128).
    pub ip: IpNet,
    /// The ip configuration's name (e.g. `ipconfig1`).
    pub config: String,
    pub primary: bool,
    pub subnet: Option<ArmId>,
}

impl IpAssignment {
    /// The VNet that scopes this IP: the subnet id cut after `virtualNetworks/<name>`.
    pub fn vnet(&self) -> Option<ArmId> {
        self.subnet
            .as_ref()
            .and_then(|s| s.truncate_after("virtualNetworks"))
    }

    /// The scope key used for ownership: the VNet's lower-cased id, or "" when
    /// the ip configuration names no subnet (borrowed from the subnet's id).
    pub fn vnet_key(&self) -> &str {
        self.subnet
            .as_ref()
            .and_then(|s| s.key_through("virtualNetworks"))
            .unwrap_or("")
    }
}

/// What attribution needs to know about a NIC at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicState {
    pub id: ArmId,
    pub name: String,
    pub mac: Option<Mac>,
    pub vm: Option<ArmId>,
    pub ips: Vec<IpAssignment>,
}

impl NicState {
    /// Canonical form: ip configurations sorted, so that two listings of the
    /// same NIC compare equal whatever order ARM returned them in.
    pub fn normalized(mut self) -> Self {
        self.ips
            .sort_by(|a, b| (a.ip, &a.config, a.vnet_key()).cmp(&(b.ip, &b.config, b.vnet_key())));
        self.ips.dedup();
        self
    }

    /// A stable fingerprint of everything attribution uses, for deduplicating
    /// repeated observations of an unchanged NIC.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.id.key());
        h.update([0]);
        h.update(self.name.as_bytes());
        h.update([0]);
        h.update(self.mac.as_ref().map(Mac::as_str).unwrap_or("").as_bytes());
        h.update([0]);
        h.update(self.vm.as_ref().map(ArmId::key).unwrap_or("").as_bytes());
        for ip in &self.ips {
            h.update([1]);
            h.update(ip.ip.to_string().as_bytes());
            h.update([0]);
            h.update(ip.config.as_bytes());
            h.update([0]);
            h.update(ip.subnet.as_ref().map(ArmId::key).unwrap_or("").as_bytes());
            h.update([ip.primary as u8]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Does this state hold `ip` (exact prefix) in scope `scope_key`?
    pub fn holds(&self, scope_key: &str, ip: &IpNet) -> bool {
        self.ips
            .iter()
            .any(|a| a.ip == *ip && a.vnet_key() == scope_key)
    }
}

/// A subscription id as keys use it: lower case, without a leading
/// `/subscriptions/` (any casing) or surrounding slashes and spaces.
pub fn normalize_subscription(s: &str) -> String {
    let s = s.trim().trim_matches('/');
    let s = match s.get(..14) {
        Some(p) if p.eq_ignore_ascii_case("subscriptions/") => &s[14..],
        _ => s,
    };
    s.trim_matches('/').to_ascii_lowercase()
}

/// A short, stable content digest (128 bits of SHA-256, hex).
pub fn short_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// A host prefix for a single address.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// A peering of a VNet with another, as the VNet's listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peering {
    /// The remote VNet.
    pub remote: ArmId,
    /// `peeringState` is `Connected`: traffic flows (`Initiated` and
    /// `Disconnected` peerings carry none).
    pub connected: bool,
    /// The remote VNet's address space as the peering shows it
    /// (`remoteAddressSpace`, else `remoteVirtualNetworkAddressSpace`).
    pub remote_address_space: Vec<IpNet>,
}

/// One subnet of a VNet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetState {
    pub id: ArmId,
    /// `addressPrefix` and `addressPrefixes`.
    pub prefixes: Vec<IpNet>,
}

/// What routing needs to know about a VNet at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetState {
    pub id: ArmId,
    /// `addressSpace.addressPrefixes`.
    pub address_space: Vec<IpNet>,
    pub subnets: Vec<SubnetState>,
    pub peerings: Vec<Peering>,
}

impl VnetState {
    /// Whether `ip` lies inside the VNet's address space.
    pub fn holds(&self, ip: IpAddr) -> bool {
        self.address_space.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_ids_compare_case_insensitively_and_keep_spelling() {
        let a = ArmId::parse("/SUBSCRIPTIONS/ABC/RESOURCEGROUPS/RG1/PROVIDERS/MICROSOFT.NETWORK/NETWORKINTERFACES/NIC1").unwrap();
        let b = ArmId::parse("/subscriptions/abc/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/nic1").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.as_str(),
            "/SUBSCRIPTIONS/ABC/RESOURCEGROUPS/RG1/PROVIDERS/MICROSOFT.NETWORK/NETWORKINTERFACES/NIC1"
        );
        assert_eq!(a.subscription(), "abc");
        for id in [&a, &b] {
            assert_eq!(ArmId::subscription_of_key(id.key()), id.subscription());
        }
        let guid = ArmId::parse(" /Subscriptions/0A1B-C2/resourceGroups/rg/ ").unwrap();
        assert_eq!(ArmId::subscription_of_key(guid.key()), "0a1b-c2");
        assert_eq!(guid.subscription(), "0a1b-c2");
        assert_eq!(b.resource_group(), Some("rg1"));
        assert_eq!(b.name(), "nic1");
        assert!(ArmId::parse("subscriptions/x").is_err());
        assert!(ArmId::parse("/tenants/x").is_err());
        assert!(ArmId::parse("").is_err());
    }

    #[test]
    fn vnet_is_the_subnet_cut_after_virtual_networks() {
        let s = ArmId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/default").unwrap();
        let v = s.truncate_after("virtualNetworks").unwrap();
        assert_eq!(
            v.as_str(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet1"
        );
        assert!(s.truncate_after("networkInterfaces").is_none());
        // The borrowed key is the cut id's key, whatever the casing.
        assert_eq!(s.key_through("VIRTUALNETWORKS"), Some(v.key()));
        assert_eq!(s.key_through("subnets"), Some(s.key()));
        assert_eq!(s.key_through("networkInterfaces"), None);
        let a = IpAssignment {
            ip: "10.0.0.4/32".parse().unwrap(),
            config: "ipconfig1".into(),
            primary: true,
            subnet: Some(s.clone()),
        };
        assert_eq!(a.vnet_key(), a.vnet().unwrap().key());
        let unscoped = IpAssignment { subnet: None, ..a };
        assert_eq!(unscoped.vnet_key(), "");
    }

    #[test]
    fn subscriptions_normalise() {
        for s in [
            " /subscriptions/AB-CD/ ",
            "/SUBSCRIPTIONS/ab-cd",
            "subscriptions/AB-CD",
            "AB-CD",
        ] {
            assert_eq!(normalize_subscription(s), "ab-cd", "{s}");
        }
        assert_eq!(
            normalize_subscription("/subscriptions/a/resourceGroups/r"),
            "a/resourcegroups/r"
        );
    }

    #[test]
    fn macs_normalise() {
        for s in [
            "000D3AF87856",
            "00-0D-3A-F8-78-56",
            "00:0d:3a:f8:78:56",
            "000d3aF87856",
        ] {
            assert_eq!(Mac::parse(s).unwrap().as_str(), "000D3AF87856", "{s}");
        }
        for s in [
            "000D124564789",
            "00-0D-3A-F8-78",
            "00-0D:3A-F8-78-56",
            "GG0D3AF87856",
            "",
        ] {
            assert!(Mac::parse(s).is_err(), "{s}");
        }
    }
}
