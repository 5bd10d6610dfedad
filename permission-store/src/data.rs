//! The per-id data value: an arbitrary D-Bus variant kept as its D-Bus
//! encoding, so what a caller stores is exactly what it reads back.

use zvariant::serialized::{Context, Data as Serialized};
use zvariant::{LE, OwnedValue, Value};

use crate::error::StoreError;

/// An encoded variant: the signature and body as D-Bus would marshal a `v`.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Vec<u8>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_value() {
            Ok(v) => write!(f, "Data({})", Value::from(v)),
            Err(_) => write!(f, "Data(<{} undecodable bytes>)", self.0.len()),
        }
    }
}

fn ctxt() -> Context {
    Context::new_dbus(LE, 0)
}

impl Data {
    /// Upstream's value for an id that was created without data: byte 0.
    pub fn empty() -> Self {
        Self::from_value(&Value::U8(0)).expect("a byte always encodes")
    }

    /// Encodes a value. File descriptors are refused, wherever they sit (a
    /// variant inside a struct hides its `h` from the outer signature): the
    /// store outlives them, and the stored index would name no fd on reading.
    pub fn from_value(value: &Value<'_>) -> Result<Self, StoreError> {
        let encoded =
            zvariant::to_bytes(ctxt(), value).map_err(|e| StoreError::BadData(e.to_string()))?;
        if !encoded.fds().is_empty() {
            return Err(StoreError::BadData(
                "file descriptors cannot be stored".into(),
            ));
        }
        Ok(Self(encoded.to_vec()))
    }

    pub fn to_value(&self) -> Result<OwnedValue, StoreError> {
        let data = Serialized::new(self.0.as_slice(), ctxt());
        let (value, _): (Value<'_>, usize) = data
            .deserialize()
            .map_err(|e| StoreError::BadData(e.to_string()))?;
        value
            .try_to_owned()
            .map_err(|e| StoreError::BadData(e.to_string()))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// GVariant text form, as `gdbus` prints it.
    pub fn to_text(&self) -> String {
        match self.to_value() {
            Ok(v) => Value::from(v).to_string(),
            Err(e) => format!("<undecodable: {e}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn round_trips_nested_values() {
        let mut dict: HashMap<String, Value<'_>> = HashMap::new();
        dict.insert("k".into(), Value::from(vec![1u8, 2, 3]));
        let values = [
            Value::U8(0),
            Value::from("text"),
            Value::from((1i32, "s", vec![3u8])),
            Value::from(dict),
            Value::Value(Box::new(Value::from(7u64))),
            Value::from(Vec::<String>::new()),
        ];
        for v in values {
            let d = Data::from_value(&v).unwrap();
            let back = d.to_value().unwrap();
            assert_eq!(Value::from(back), v);
            let again = Data::from_value(&d.to_value().unwrap()).unwrap();
            assert_eq!(again, d, "re-encoding must give the same bytes");
        }
    }

    #[test]
    fn file_descriptors_are_refused_however_deeply_nested() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = || Value::Fd(zvariant::Fd::from(std::os::fd::AsFd::as_fd(&file)));
        let mut dict: HashMap<String, Value<'_>> = HashMap::new();
        dict.insert("k".into(), Value::Value(Box::new(fd())));
        for v in [
            fd(),
            Value::Value(Box::new(fd())),
            Value::from((1u32, Value::Value(Box::new(fd())))),
            Value::from(dict),
        ] {
            let sig = v.value_signature().to_string();
            assert!(
                matches!(Data::from_value(&v), Err(StoreError::BadData(m)) if m.contains("file descriptors")),
                "a value of type {sig} holding an fd was accepted"
            );
        }
    }

    #[test]
    fn empty_is_byte_zero() {
        assert_eq!(Value::from(Data::empty().to_value().unwrap()), Value::U8(0));
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        for bytes in [vec![], vec![1], vec![1, b'(', 0], vec![255; 64]] {
            assert!(Data::from_bytes(bytes).to_value().is_err());
        }
    }
}
