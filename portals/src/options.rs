//! Option dictionaries as upstream filters them (`xdp_filter_options`):
//! only known keys go on to the backend; a known key with the wrong type,
//! or a value its validator refuses, is `InvalidArgument`; unknown keys are
//! dropped without a word.

use std::collections::HashMap;

use porthole_service::PortalError;
use zvariant::{OwnedValue, Value};

pub type Options = HashMap<String, OwnedValue>;

/// Checks a value beyond its type; `options` is the whole dictionary (for
/// checks across keys). The error is the reply's message.
pub type Validator = fn(&Value<'_>, &Options) -> Result<(), String>;

/// One known key.
#[derive(Clone, Copy)]
pub struct OptionKey {
    pub key: &'static str,
    pub signature: &'static str,
    pub validate: Option<Validator>,
}

impl OptionKey {
    pub const fn plain(key: &'static str, signature: &'static str) -> Self {
        Self {
            key,
            signature,
            validate: None,
        }
    }

    pub const fn checked(key: &'static str, signature: &'static str, validate: Validator) -> Self {
        Self {
            key,
            signature,
            validate: Some(validate),
        }
    }
}

/// The options the backend gets.
pub fn filter(options: &Options, keys: &[OptionKey]) -> Result<Options, PortalError> {
    let mut out = Options::new();
    for k in keys {
        let Some(value) = options.get(k.key) else {
            continue;
        };
        let found = value.value_signature().to_string();
        if found != k.signature {
            return Err(PortalError::InvalidArgument(format!(
                "expected type for key {} is {}, found {found}",
                k.key, k.signature
            )));
        }
        if let Some(validate) = k.validate {
            validate(value, options).map_err(PortalError::InvalidArgument)?;
        }
        out.insert(k.key.to_owned(), clone(value)?);
    }
    Ok(out)
}

/// The value of `key` when it has type `signature`; None when missing or
/// of another type (upstream's `g_variant_lookup_value` with a type).
pub fn lookup<'a>(options: &'a Options, key: &str, signature: &str) -> Option<&'a OwnedValue> {
    options
        .get(key)
        .filter(|v| v.value_signature().to_string() == signature)
}

/// A copy of a value (values from the bus hold no fds here; one that does
/// is refused rather than duplicated).
pub fn clone(value: &OwnedValue) -> Result<OwnedValue, PortalError> {
    value
        .try_clone()
        .map_err(|e| PortalError::InvalidArgument(format!("unexpected value: {e}")))
}

/// Decodes a value already known to have the right signature.
pub fn decode<'a, T>(value: &Value<'a>) -> Result<T, String>
where
    T: TryFrom<Value<'a>>,
    T::Error: std::fmt::Display,
{
    let copy = value.try_clone().map_err(|e| e.to_string())?;
    T::try_from(copy).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: Value<'_>) -> OwnedValue {
        OwnedValue::try_from(value).unwrap()
    }

    fn not_empty(value: &Value<'_>, _: &Options) -> Result<(), String> {
        let s: String = decode(value)?;
        if s.is_empty() {
            Err("empty".into())
        } else {
            Ok(())
        }
    }

    const KEYS: &[OptionKey] = &[
        OptionKey::plain("modal", "b"),
        OptionKey::checked("accept_label", "s", not_empty),
    ];

    #[test]
    fn known_keys_pass_unknown_keys_drop_wrong_types_fail() {
        let mut o = Options::new();
        o.insert("modal".into(), v(Value::from(true)));
        o.insert("accept_label".into(), v(Value::from("_Open")));
        o.insert("bogus".into(), v(Value::from(1u32)));
        let out = filter(&o, KEYS).unwrap();
        assert_eq!(out.len(), 2);
        assert!(!out.contains_key("bogus"));

        o.insert("modal".into(), v(Value::from("yes")));
        let err = filter(&o, KEYS).unwrap_err();
        assert!(matches!(err, PortalError::InvalidArgument(m) if m.contains("modal")));

        o.insert("modal".into(), v(Value::from(false)));
        o.insert("accept_label".into(), v(Value::from("")));
        assert!(matches!(
            filter(&o, KEYS),
            Err(PortalError::InvalidArgument(m)) if m == "empty"
        ));
    }

    #[test]
    fn lookup_ignores_other_types() {
        let mut o = Options::new();
        o.insert("current_folder".into(), v(Value::from("/tmp")));
        assert!(lookup(&o, "current_folder", "ay").is_none());
        o.insert("current_folder".into(), v(Value::from(b"/tmp\0".to_vec())));
        assert!(lookup(&o, "current_folder", "ay").is_some());
    }
}
