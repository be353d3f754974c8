//! The serde shapes of flow-log records and flat objects, borrowing from the
//! record's bytes: strings without escapes are never copied, tuples that are
//! not strings are reported rather than failing the record, and a flat
//! object keeps its fields in order, values unparsed.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::tuple;

/// A string that borrows from the input when it has no escapes.
#[derive(Debug)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A tuple array element: a string, or anything else (reported, not fatal).
pub(super) enum TupleItem<'a> {
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for TupleItem<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TupleItem<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a flow tuple")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TupleItem::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TupleItem::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TupleItem::Str(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(TupleItem::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(TupleItem::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(TupleItem::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(TupleItem::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(TupleItem::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TupleItem::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TupleItem::Other("an object"))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A version number given as a number or a string; anything else is `None`.
pub(super) struct Loose(pub(super) Option<u32>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <&RawValue>::deserialize(d)?;
        let s = v.get().trim_matches('"');
        Ok(Loose(
            tuple::parse_u64(s.as_bytes()).and_then(|n| u32::try_from(n).ok()),
        ))
    }
}

#[derive(Deserialize)]
pub(super) struct RawRecord<'a> {
    #[serde(borrow, default)]
    pub(super) time: Option<Str<'a>>,
    #[serde(
        borrow,
        default,
        rename = "resourceId",
        alias = "resourceid",
        alias = "resourceID"
    )]
    pub(super) resource_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) properties: Option<NsgProperties<'a>>,
    #[serde(default, rename = "flowLogVersion")]
    pub(super) flow_log_version: Option<Loose>,
    #[serde(borrow, default, rename = "macAddress")]
    pub(super) mac_address: Option<Str<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowLogResourceID",
        alias = "flowLogResourceId"
    )]
    pub(super) flow_log_id: Option<Str<'a>>,
    #[serde(
        borrow,
        default,
        rename = "targetResourceID",
        alias = "targetResourceId"
    )]
    pub(super) target_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "flowRecords")]
    pub(super) flow_records: Option<VnetFlowRecords<'a>>,
}

#[derive(Deserialize)]
pub(super) struct NsgProperties<'a> {
    #[serde(default, rename = "Version", alias = "version")]
    pub(super) version: Option<Loose>,
    #[serde(borrow, default)]
    pub(super) flows: Option<Vec<NsgRule<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct NsgRule<'a> {
    #[serde(borrow, default)]
    pub(super) rule: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) flows: Option<Vec<NsgFlow<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct NsgFlow<'a> {
    #[serde(borrow, default)]
    pub(super) mac: Option<Str<'a>>,
    #[serde(borrow, default, rename = "flowTuples")]
    pub(super) flow_tuples: Option<Vec<TupleItem<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct VnetFlowRecords<'a> {
    #[serde(borrow, default)]
    pub(super) flows: Option<Vec<VnetFlow<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct VnetFlow<'a> {
    #[serde(borrow, default, rename = "aclID", alias = "aclId")]
    pub(super) acl_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "flowGroups")]
    pub(super) flow_groups: Option<Vec<VnetGroup<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct VnetGroup<'a> {
    #[serde(borrow, default)]
    pub(super) rule: Option<Str<'a>>,
    #[serde(borrow, default, rename = "flowTuples")]
    pub(super) flow_tuples: Option<Vec<TupleItem<'a>>>,
}

/// A flat object as its fields, in order, values unparsed.
pub(super) struct FlatMap<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for FlatMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FlatMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(16);
                while let Some((k, val)) = a.next_entry::<Str<'a>, &'a RawValue>()? {
                    v.push((k.0, val));
                }
                Ok(FlatMap(v))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The keys of flat input that ipwho interprets; all others pass through.
pub const FLAT_KEYS: &[&str] = &[
    "time",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "protocol",
    "direction",
    "mac",
    "vnet",
    "subscription",
];
