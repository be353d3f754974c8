//! Addresses for the far end: public ones and private ones of a VNet that
//! nobody ever owned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::truth::{TruthIndex, World};

const PUBLIC_FIRST_OCTETS: &[u8] = &[13, 20, 23, 40, 51, 52, 104, 151, 185, 194];

pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_private(),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) != 0xfc00,
    }
}

pub(crate) fn public_ip(rng: &mut ChaCha8Rng, v4: bool) -> IpAddr {
    if v4 {
        let a = PUBLIC_FIRST_OCTETS[rng.random_range(0..PUBLIC_FIRST_OCTETS.len())];
        IpAddr::V4(Ipv4Addr::new(
            a,
            rng.random(),
            rng.random(),
            rng.random_range(1..255),
        ))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2603,
            0x1030,
            rng.random(),
            rng.random(),
            0,
            0,
            0,
            rng.random_range(1..0xffff),
        ))
    }
}

/// A private IP of VNet `vn` that nobody ever owned.
pub(crate) fn unowned_ip(
    world: &World,
    truth: &TruthIndex,
    vn: u32,
    v4: bool,
    rng: &mut ChaCha8Rng,
) -> Option<IpAddr> {
    let vnet = &world.vnets[vn as usize];
    for _ in 0..30 {
        let ip = if v4 {
            let base = u32::from(vnet.v4.network());
            let off = if vnet.legacy {
                rng.random_range(4..255)
            } else {
                // 10.x.250.0/23 is never a subnet.
                (250 << 8) + rng.random_range(4..500)
            };
            IpAddr::V4(Ipv4Addr::from(base + off))
        } else {
            let n = vnet.v6?;
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network())
                    | (0xfffu128 << 64)
                    | u128::from(rng.random_range(4u32..5000)),
            ))
        };
        if truth.history(vn, ip).is_empty() {
            return Some(ip);
        }
    }
    None
}
