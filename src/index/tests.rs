//! The index's own bookkeeping: where claims lie, shared display values,
//! and exclusivity held on its slots.

use super::inner::Space;
use super::*;
use crate::engine::{Attachment, ClaimKey, EvidenceKind, EvidenceRef, Window};
use crate::model::ArmId;

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers";

fn ev(at: Micros) -> EvidenceRef {
    EvidenceRef {
        kind: EvidenceKind::Snapshot,
        id: format!("s{at}").into(),
        at,
    }
}

fn claim(nic: &str, vnet: &str, certain: Window, possible: Window) -> Claim {
    let nic = ArmId::parse(&format!("{SUB}/Microsoft.Network/networkInterfaces/{nic}")).unwrap();
    let vnet = ArmId::parse(&format!("{SUB}/Microsoft.Network/virtualNetworks/{vnet}")).unwrap();
    let vm = ArmId::parse(&format!(
        "{SUB}/Microsoft.Compute/virtualMachines/vm-{}",
        nic.name()
    ))
    .unwrap();
    Claim {
        key: ClaimKey {
            nic: nic.key().into(),
            scope: vnet.key().into(),
            ip: "10.0.0.4/32".parse().unwrap(),
        },
        nic_name: nic.name().into(),
        mac: None,
        nic,
        subnet: None,
        vnet: Some(vnet),
        certain,
        possible,
        start_exact: false,
        end_exact: false,
        before: None,
        first: ev(certain.start),
        last: ev(certain.end - 1),
        after: None,
        vms: vec![Attachment {
            vm: Some(vm),
            certain,
            possible,
            first: ev(certain.start),
            last: ev(certain.end - 1),
        }],
        live: false,
    }
}

fn w(start: Micros, end: Micros) -> Window {
    Window { start, end }
}

#[test]
fn the_space_holds_the_sixteens_and_forty_eights_of_the_claims() {
    let mut s = Space::default();
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    assert!(!s.holds(ip("10.0.0.4")) && !s.holds(ip("fd00::4")));
    s.add(&"20.50.1.4/32".parse().unwrap());
    s.add(&"172.16.0.0/15".parse().unwrap());
    s.add(&"2603:1030:40c:7::4/128".parse().unwrap());
    for a in [
        "20.50.0.1",
        "20.50.255.255",
        "172.16.9.9",
        "172.17.0.1",
        "2603:1030:40c:ffff::1",
    ] {
        assert!(s.holds(ip(a)), "{a}");
    }
    for a in [
        "20.51.1.4",
        "20.49.1.4",
        "172.18.0.1",
        "10.0.0.4",
        "2603:1030:40d::4",
        "fd00::4",
    ] {
        assert!(!s.holds(ip(a)), "{a}");
    }
    s.add(&"2001:db8::/32".parse().unwrap());
    assert!(
        s.holds(ip("fd00::4")),
        "a prefix wider than /48 opens every IPv6 address"
    );
    assert!(!s.holds(ip("10.0.0.4")));
}

#[test]
fn a_replaced_nic_keeps_its_infos_while_its_ids_stay() {
    let idx = Index::new();
    let c = |vnet, end| claim("n1", vnet, w(0, end), w(0, end));
    let key = c("v1", 10).key.nic.to_string();
    let infos = |idx: &Index| {
        let r = idx.inner.read().unwrap();
        let e = r.by_nic[key.as_str()][0].clone();
        (e.info.clone(), e.vms[0].clone().unwrap(), e.certain.end)
    };
    idx.replace([(key.clone(), vec![c("v1", 10)])]);
    let (first, vm1, _) = infos(&idx);
    // A new window, the same NIC, VM and VNet: the same infos.
    idx.replace([(key.clone(), vec![c("v1", 20)])]);
    let (second, vm2, end) = infos(&idx);
    assert!(Arc::ptr_eq(&first, &second) && Arc::ptr_eq(&vm1, &vm2));
    assert_eq!(end, 20);
    assert_eq!(idx.len(), 1);
    // Another VNet: a NicInfo of its own.
    idx.replace([(key.clone(), vec![c("v2", 20)])]);
    let (third, _, _) = infos(&idx);
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(
        third.vnet.as_deref().map(|v| v.ends_with("/v2")),
        Some(true)
    );
    assert_eq!(idx.len(), 1);
}

#[test]
fn slots_hold_windows_bounded_by_exclusivity_as_claims_change() {
    let idx = Index::new();
    // n1 seen 0..100, nothing ended it; n2 certain from 200 (created).
    let n1 = claim("n1", "v", w(0, 100), w(0, engine::POS_INF));
    let n2 = claim("n2", "v", w(200, 300), w(150, 300));
    let k1 = n1.key.nic.to_string();
    let k2 = n2.key.nic.to_string();
    let slots = |idx: &Index| {
        let r = idx.inner.read().unwrap();
        let mut v: Vec<(String, Micros, Micros)> = r.by_ip
            [&"10.0.0.4/32".parse::<IpNet>().unwrap()]
            .iter()
            .map(|s| (s.info.name.clone(), s.from, s.until))
            .collect();
        v.sort();
        v
    };
    idx.replace([(k1.clone(), vec![n1.clone()])]);
    assert_eq!(slots(&idx), vec![("n1".into(), 0, engine::POS_INF)]);
    idx.replace([(k2.clone(), vec![n2])]);
    assert_eq!(
        slots(&idx),
        vec![("n1".into(), 0, 200), ("n2".into(), 150, 300)],
        "n1 ends where n2 certainly begins; n2 begins where n1 certainly ends (100 < 150: no change)"
    );
    // n2 goes away: n1 is open again.
    idx.replace([(k2, vec![])]);
    assert_eq!(slots(&idx), vec![("n1".into(), 0, engine::POS_INF)]);
}
