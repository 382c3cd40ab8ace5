//! Other hosted APIs' shapes over the same job core, so code written for them works
//! by changing the host (and key header): the request mapping and the response
//! shapes, pure and tested natively. The thin handlers are in `handlers/`.

pub mod eachlabs;
pub mod onemin;

use parallax_api::FieldError;
use serde_json::{Map, Value};

/// Renames the fields of validation errors from Parallax's names to the calling API's
/// (`rename` maps one of ours to theirs), under `prefix` (`input.`, `promptObject.`).
pub fn rename_fields(
    errors: Vec<FieldError>,
    prefix: &str,
    rename: impl Fn(&str) -> Option<&'static str>,
) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| {
            let name = rename(&e.field).map_or(e.field.clone(), str::to_owned);
            FieldError::new(format!("{prefix}{name}"), e.message)
        })
        .collect()
}

/// An object field of a JSON body: `Ok(None)` when absent, a 400 naming it when it is
/// not an object.
pub fn object_field<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, FieldError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(FieldError::new(name, "must be a JSON object")),
    }
}

/// A string field: `Ok(None)` when absent or empty, a 400 naming it when not a string.
pub fn string_field(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, FieldError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(FieldError::new(name, "must be a string")),
    }
}

/// A field that must hold one of `allowed`; the error names them all.
pub fn choice_field(
    fields: &Map<String, Value>,
    name: &str,
    allowed: &[&str],
    required: bool,
) -> Result<Option<String>, FieldError> {
    let must = || {
        FieldError::new(
            name,
            format!(
                "must be {}{}",
                if allowed.len() > 1 { "one of: " } else { "" },
                allowed.join(", ")
            ),
        )
    };
    match string_field(fields, name).map_err(|_| must())? {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(_) => Err(must()),
        None if required => Err(FieldError::new(
            name,
            format!("is required; allowed: {}", allowed.join(", ")),
        )),
        None => Ok(None),
    }
}

/// Fields of `fields` that are not in `known`, as errors listing the known ones.
pub fn unknown_fields(
    fields: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Vec<FieldError> {
    fields
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                format!("{prefix}{}", k.chars().take(64).collect::<String>()),
                format!("unknown field; allowed: {}", known.join(", ")),
            )
        })
        .collect()
}

/// `2025-10-27T08:43:17.647Z` for Unix milliseconds.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A UUID-shaped, stable, non-reversible id for an account (`key:…` or `anon:…`):
/// the first 16 bytes of its SHA-256.
pub fn account_uuid(account: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(account.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc_with_milliseconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_761_554_597_647), "2025-10-27T08:43:17.647Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn account_ids_look_like_uuids_and_differ_per_account() {
        let a = account_uuid("key:abc");
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, account_uuid("key:abd"));
        assert!(!a.contains("abc"));
    }

    #[test]
    fn choices_name_every_allowed_value() {
        let f = json!({"type": "CHAT", "model": 3});
        let f = f.as_object().unwrap();
        let e = choice_field(f, "type", &["IMAGE_EDITOR"], true).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("type", "must be IMAGE_EDITOR")
        );
        let e = choice_field(f, "model", &["a", "b"], true).unwrap_err();
        assert_eq!(e.message, "must be one of: a, b");
        let e = choice_field(f, "missing", &["a"], true).unwrap_err();
        assert_eq!(e.message, "is required; allowed: a");
        assert_eq!(choice_field(f, "missing", &["a"], false).unwrap(), None);
    }
}
