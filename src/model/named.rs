//! A NIC and a VM as answers name them: their ARM ids in display casing,
//! with the names and keys a reader of an answer wants beside them. The
//! claims index builds one of each per NIC and VNet, and per VM, and hands
//! out clones of the `Arc`, so naming one in an answer allocates nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ArmId;

/// A NIC in one VNet. Ids keep their display casing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// The NIC's ARM id.
    pub id: String,
    pub name: String,
    /// The VNet of the NIC's ip configurations (ARM id).
    pub vnet: Option<String>,
    /// Its key (lower case): the capturing VNet, for routing the far end.
    #[serde(skip)]
    pub vnet_key: Option<Arc<str>>,
    /// The NIC's subscription (lower case).
    #[serde(skip)]
    pub subscription: String,
}

impl NicInfo {
    /// Fills the name from the id.
    pub fn new(nic: &ArmId, vnet: Option<&ArmId>) -> Self {
        NicInfo {
            id: nic.as_str().to_string(),
            name: nic.name().to_string(),
            vnet: vnet.map(|v| v.as_str().to_string()),
            vnet_key: vnet.map(|v| v.shared_key()),
            subscription: nic.subscription(),
        }
    }
}

/// A VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub resource_group: Option<String>,
    pub subscription: String,
}

impl VmInfo {
    pub fn new(vm: &ArmId) -> Self {
        VmInfo {
            id: vm.as_str().to_string(),
            name: vm.name().to_string(),
            resource_group: vm.resource_group().map(str::to_string),
            subscription: vm.subscription(),
        }
    }
}
