//! Request ids: random 128-bit UUIDs in their canonical lowercase form. An id is an
//! unguessable capability (share links are built from it), so parsing is strict.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job's id, e.g. `2c7f59ea-13f1-402c-9353-915a2b5a2124`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// Accepts only the canonical lowercase 8-4-4-4-12 hex form.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let ok = bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
        ok.then(|| Self(s.to_owned()))
    }

    /// Builds a version-4 UUID from 16 random bytes supplied by the caller.
    pub fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not a request id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_become_a_canonical_v4_uuid() {
        let id = RequestId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "abababab-abab-4bab-abab-abababababab");
        assert_eq!(RequestId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn parse_rejects_anything_but_the_canonical_form() {
        for bad in [
            "",
            "../../etc/passwd",
            "2C7F59EA-13F1-402C-9353-915A2B5A2124",
            "2c7f59ea13f1402c9353915a2b5a2124",
            "2c7f59ea-13f1-402c-9353-915a2b5a21245",
            "2c7f59ea-13f1-402c-9353-915a2b5a212g",
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        assert!(RequestId::parse("2c7f59ea-13f1-402c-9353-915a2b5a2124").is_some());
    }
}
