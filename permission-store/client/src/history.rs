//! `History`'s arguments and records, `a{sv}` dictionaries on the wire.
//!
//! Both sides use these types (the service to encode, clients to decode), so
//! a key or its type is spelt once. The keys are part of our interface:
//! renaming a field here renames it on the wire.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zvariant::{DeserializeDict, OwnedValue, SerializeDict, Signature, Type, Value};

/// One record of the audit history.
///
/// Keys: `seq` (x), `time` (x, µs since the Unix epoch), `action` (s:
/// `grant`, `revoke`, `expire`, `data` or `delete`), `table`, `id`, `caller`
/// (s: the app id of the process that made the change, "" for a host
/// process), and when they apply `app` (s), `old` and `new` (as). Keys this
/// version does not know are ignored, so the service may add some.
#[derive(Debug, Clone, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}")]
pub struct HistoryRecord {
    pub seq: i64,
    pub time: i64,
    pub action: String,
    pub table: String,
    pub id: String,
    pub caller: String,
    /// The app whose grant changed; absent for a data change or a deleted id.
    pub app: Option<String>,
    /// The app's permissions before the change, when it had a grant.
    pub old: Option<Vec<String>>,
    /// The app's permissions after the change, when it keeps a grant.
    pub new: Option<Vec<String>>,
}

/// Which records `History` returns (newest first). Keys: `table` (s), `app`
/// (s), `limit` (any integer type, see [`Limit`]); an absent key does not
/// filter. A key the service does not know is refused, not ignored: a
/// filter that silently did not apply would show records the user did not
/// ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", deny_unknown_fields)]
pub struct HistoryFilter {
    pub table: Option<String>,
    pub app: Option<String>,
    pub limit: Option<Limit>,
}

impl HistoryFilter {
    /// Decodes a filter that arrived as a plain `a{sv}`.
    ///
    /// The service takes its argument as a dictionary and decodes it here,
    /// rather than naming [`HistoryFilter`] as the argument type, so that a
    /// bad filter is answered with `org.freedesktop.portal.Error.InvalidArgument`
    /// like every other bad argument, not with zbus's own error for a body
    /// it could not decode. The dictionary is encoded once more and decoded
    /// by the derived code, so there is one decoder, not a second by hand.
    pub fn from_dict(dict: &HashMap<String, OwnedValue>) -> Result<Self, zvariant::Error> {
        let ctxt = zvariant::serialized::Context::new_dbus(zvariant::LE, 0);
        let bytes = zvariant::to_bytes(ctxt, dict)?;
        Ok(bytes.deserialize::<Self>()?.0)
    }
}

/// `limit`: how many records at most; 0 returns them all.
///
/// Sent as `u` by zbus clients, but `gdbus call ... "{'limit': <5>}"` sends
/// a plain `<5>` as an `i`, and other clients may send any width. So the
/// value is read as a variant of any integer type that holds a number from
/// 0 to `u32::MAX` (its [`Type`] is the variant itself, which makes the
/// dictionary derives hand it the variant unopened); it is written as `u`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Limit(pub u32);

impl Limit {
    /// The count a variant holds, if it is an integer in range.
    pub fn from_value(v: &Value<'_>) -> Option<Self> {
        let n = match *v {
            Value::U8(n) => n.into(),
            Value::U16(n) => n.into(),
            Value::U32(n) => n,
            Value::I16(n) => u32::try_from(n).ok()?,
            Value::I32(n) => u32::try_from(n).ok()?,
            Value::U64(n) => u32::try_from(n).ok()?,
            Value::I64(n) => u32::try_from(n).ok()?,
            _ => return None,
        };
        Some(Self(n))
    }
}

impl From<u32> for Limit {
    fn from(n: u32) -> Self {
        Self(n)
    }
}

impl Type for Limit {
    const SIGNATURE: &'static Signature = &Signature::Variant;
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Value::U32(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = OwnedValue::deserialize(deserializer)?;
        Self::from_value(&v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "\"limit\" must be an integer from 0 to 4294967295, not {}",
                Value::from(v)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctxt() -> zvariant::serialized::Context {
        zvariant::serialized::Context::new_dbus(zvariant::LE, 0)
    }

    /// Encodes `value` and decodes the bytes as `T`: what crosses the bus.
    fn over_the_wire<S: Serialize + Type, T: for<'d> Deserialize<'d> + Type>(
        value: &S,
    ) -> Result<T, zvariant::Error> {
        let bytes = zvariant::to_bytes(ctxt(), value)?;
        Ok(bytes.deserialize::<T>()?.0)
    }

    fn owned(v: Value<'_>) -> OwnedValue {
        v.try_to_owned().unwrap()
    }

    fn record() -> HistoryRecord {
        HistoryRecord {
            seq: 7,
            time: 1_700_000_000_123_456,
            action: "revoke".into(),
            table: "devices".into(),
            id: "camera".into(),
            caller: "".into(),
            app: Some("org.example.App".into()),
            old: Some(vec!["yes".into(), "ask".into()]),
            new: Some(vec![]),
        }
    }

    #[test]
    fn signatures_are_the_interfaces() {
        assert_eq!(HistoryRecord::SIGNATURE.to_string(), "a{sv}");
        assert_eq!(<Vec<HistoryRecord>>::SIGNATURE.to_string(), "aa{sv}");
        assert_eq!(HistoryFilter::SIGNATURE.to_string(), "a{sv}");
    }

    /// A record is the dictionary the service built by hand before: these
    /// keys, these types, and no key for an absent field.
    #[test]
    fn record_keys_and_types() {
        let dict: HashMap<String, OwnedValue> = over_the_wire(&record()).unwrap();
        let sig = |k: &str| dict[k].value_signature().to_string();
        let mut keys: Vec<&str> = dict.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "action", "app", "caller", "id", "new", "old", "seq", "table", "time"
            ]
        );
        for (k, s) in [("seq", "x"), ("time", "x"), ("action", "s"), ("table", "s")] {
            assert_eq!(sig(k), s, "{k}");
        }
        for (k, s) in [("id", "s"), ("caller", "s"), ("app", "s")] {
            assert_eq!(sig(k), s, "{k}");
        }
        assert_eq!((sig("old"), sig("new")), ("as".into(), "as".into()));
        assert_eq!(i64::try_from(&dict["time"]).unwrap(), 1_700_000_000_123_456);

        let bare = HistoryRecord {
            app: None,
            old: None,
            new: None,
            ..record()
        };
        let dict: HashMap<String, OwnedValue> = over_the_wire(&bare).unwrap();
        assert!(!dict.contains_key("app") && !dict.contains_key("old"));
        assert!(!dict.contains_key("new"));
        assert_eq!(over_the_wire::<_, HistoryRecord>(&bare).unwrap(), bare);
    }

    #[test]
    fn record_decodes_from_a_dictionary() {
        assert_eq!(
            over_the_wire::<_, HistoryRecord>(&record()).unwrap(),
            record()
        );
        // A newer service may send more keys; they are ignored.
        let mut dict: HashMap<String, OwnedValue> = over_the_wire(&record()).unwrap();
        dict.insert("colour".into(), owned(Value::from("red")));
        assert_eq!(over_the_wire::<_, HistoryRecord>(&dict).unwrap(), record());
        // A required key missing, or of the wrong type, is an error.
        let mut missing = dict.clone();
        missing.remove("caller");
        assert!(over_the_wire::<_, HistoryRecord>(&missing).is_err());
        let mut wrong = dict;
        wrong.insert("seq".into(), owned(Value::from(7i32)));
        assert!(over_the_wire::<_, HistoryRecord>(&wrong).is_err());
    }

    fn filter_of(pairs: &[(&str, Value<'_>)]) -> Result<HistoryFilter, zvariant::Error> {
        let dict: HashMap<String, OwnedValue> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), owned(v.clone())))
            .collect();
        HistoryFilter::from_dict(&dict)
    }

    #[test]
    fn filter_round_trip() {
        let f = HistoryFilter {
            table: Some("network".into()),
            app: None,
            limit: Some(Limit(3)),
        };
        let dict: HashMap<String, OwnedValue> = over_the_wire(&f).unwrap();
        assert_eq!(dict.len(), 2);
        assert_eq!(dict["limit"].value_signature().to_string(), "u");
        assert_eq!(HistoryFilter::from_dict(&dict).unwrap(), f);
        assert_eq!(
            filter_of(&[]).unwrap(),
            HistoryFilter::default(),
            "an empty filter filters nothing"
        );
    }

    /// gdbus sends `<5>` as int32; every integer type in range is a limit.
    #[test]
    fn limit_takes_any_integer_type() {
        for v in [
            Value::U8(5),
            Value::U16(5),
            Value::U32(5),
            Value::I16(5),
            Value::I32(5),
            Value::U64(5),
            Value::I64(5),
        ] {
            let sig = v.value_signature().to_string();
            assert_eq!(
                filter_of(&[("limit", v)]).unwrap().limit,
                Some(Limit(5)),
                "{sig}"
            );
        }
        assert_eq!(
            filter_of(&[("limit", Value::U64(u32::MAX.into()))])
                .unwrap()
                .limit,
            Some(Limit(u32::MAX))
        );
        for bad in [
            Value::I32(-1),
            Value::I64(i64::from(u32::MAX) + 1),
            Value::U64(u64::MAX),
            Value::from("5"),
            Value::F64(5.0),
            Value::Bool(true),
        ] {
            let err = filter_of(&[("limit", bad.clone())]).unwrap_err();
            assert!(
                err.to_string().contains("\"limit\" must be an integer"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn filter_refuses_unknown_keys_and_wrong_types() {
        let err = filter_of(&[("colour", Value::from("red"))]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(filter_of(&[("table", Value::U32(1))]).is_err());
        assert!(filter_of(&[("app", Value::from(vec!["a"]))]).is_err());
        assert_eq!(
            filter_of(&[("app", Value::from("org.example.App"))])
                .unwrap()
                .app
                .as_deref(),
            Some("org.example.App")
        );
    }
}
