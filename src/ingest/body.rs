//! Bodies as posted: gzip decompressed within a size limit, and list
//! bodies (a snapshot page, a VNet listing) read one level deep, in every
//! shape Azure's tools print them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::{IngestError, Input};

/// A list body (a snapshot page, a VNet listing) read one level deep: its
/// records and metadata fields as JSON text, each record parsed on its own
/// afterwards.
pub(crate) struct ListBody<'a> {
    /// The records; `None` when the body holds no list of them.
    pub records: Option<Vec<Cow<'a, RawValue>>>,
    /// The metadata fields asked for, as given.
    pub meta: serde_json::Map<String, Value>,
    /// What the page says of the pages after it.
    pub after: After,
}

/// What a list page says of the rest of its listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Nothing: it is the last page (or the listing's only one).
    Nothing,
    /// More pages follow: the field that links to the next one (ARM's
    /// `nextLink`, Resource Graph's skip token).
    More(&'static str),
    /// Resource Graph cut the result short (`resultTruncated`) and gave no
    /// skip token: the rest cannot be fetched page by page.
    Truncated,
}

impl After {
    fn of(fields: &BTreeMap<String, &RawValue>) -> After {
        let given = |k: &str| {
            fields
                .get(k)
                .is_some_and(|raw| match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Null) => false,
                    Ok(Value::String(s)) => !s.trim().is_empty(),
                    _ => true,
                })
        };
        for k in ["nextLink", "$skipToken", "skipToken", "skip_token"] {
            if given(k) {
                return After::More(k);
            }
        }
        let truncated = fields.get("resultTruncated").is_some_and(|raw| {
            matches!(
                serde_json::from_str::<Value>(raw.get()),
                Ok(Value::Bool(true))
            ) || raw.get().eq_ignore_ascii_case("\"true\"")
        });
        if truncated {
            After::Truncated
        } else {
            After::Nothing
        }
    }
}

/// The rows of a Resource Graph response in its table format (`"data":
/// {"columns": [{"name", "type"}], "rows": [[...]]}`), each as the object
/// the default format gives. `None` when `data` is not such a table.
fn table_rows(data: &RawValue) -> Option<Vec<Cow<'static, RawValue>>> {
    #[derive(serde::Deserialize)]
    struct Column {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Table {
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
    }
    let table: Table = serde_json::from_str(data.get()).ok()?;
    table
        .rows
        .into_iter()
        .map(|row| {
            let obj: serde_json::Map<String, Value> = table
                .columns
                .iter()
                .map(|c| c.name.clone())
                .zip(row)
                .collect();
            let text = serde_json::to_string(&obj).ok()?;
            RawValue::from_string(text).ok().map(Cow::Owned)
        })
        .collect()
}

/// Reads a list body: a JSON array of records; or an object with them
/// under the first of `lists` that holds an array (`data` may also be
/// Resource Graph's table format), its `meta` fields kept; or one record
/// as a GET returns it, when its `id` is `one`'s.
pub(crate) fn list_body<'a>(
    body: &'a [u8],
    lists: &[&str],
    meta: &[&str],
    one: fn(&str) -> bool,
) -> Result<ListBody<'a>, serde_json::Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let records: Vec<&RawValue> = serde_json::from_slice(body)?;
        return Ok(ListBody {
            records: Some(records.into_iter().map(Cow::Borrowed).collect()),
            meta: Default::default(),
            after: After::Nothing,
        });
    }
    let fields: BTreeMap<String, &RawValue> = match first {
        Some(b'{') => serde_json::from_slice(body)?,
        _ => {
            // Not an object or array: only a JSON error or nothing to use.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
            BTreeMap::new()
        }
    };
    let records = lists
        .iter()
        .find_map(|k| {
            let raw = fields.get(*k)?;
            let items = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
            Some(items.into_iter().map(Cow::Borrowed).collect())
        })
        .or_else(|| table_rows(fields.get("data")?))
        .or_else(|| {
            // One record (`az network nic show`, an ARM GET): a page of one.
            let id = fields.get("id")?;
            let id = serde_json::from_str::<&str>(id.get()).ok()?;
            one(id)
                .then(|| serde_json::from_slice::<&RawValue>(body).ok())
                .flatten()
                .map(|raw| vec![Cow::Borrowed(raw)])
        });
    let after = After::of(&fields);
    let mut kept = serde_json::Map::new();
    for (k, raw) in fields {
        if meta.contains(&k.as_str()) {
            kept.insert(k, serde_json::from_str(raw.get())?);
        }
    }
    Ok(ListBody {
        records,
        meta: kept,
        after,
    })
}

/// A body or file as posted, gzip decompressed: gzip is recognised by its
/// magic bytes (whatever the headers say), and its decompressed size held to
/// `limit` when one is given (a small gzip body may expand a
/// thousandfold: [`IngestError::TooLarge`]).
pub fn decompressed(body: &[u8], limit: Option<usize>) -> Result<Cow<'_, [u8]>, IngestError> {
    use std::io::Read;
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    let cap = limit.map_or(u64::MAX, |l| l as u64 + 1);
    flate2::read::MultiGzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| {
            IngestError::invalid(
                Input::Body,
                "body",
                format!("the gzip body could not be decompressed: {e}"),
            )
        })?;
    match limit {
        Some(limit) if out.len() > limit => Err(IngestError::TooLarge { limit }),
        _ => Ok(Cow::Owned(out)),
    }
}
