//! Application id rules, identical to Flatpak's `flatpak_is_valid_name`, so an
//! id valid for Flatpak is valid for us and the other way round.

use std::fmt;

/// The longest app id Flatpak accepts.
pub const MAX_LEN: usize = 255;

/// Why a string is not a valid app id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    #[error("app id is empty")]
    Empty,
    #[error("app id is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("app id must not start with a period")]
    LeadingPeriod,
    #[error("app id needs at least three elements separated by periods (like org.example.App)")]
    TooFewElements,
    #[error("app id has an empty element")]
    EmptyElement,
    #[error("element {0:?} of the app id starts with a digit")]
    LeadingDigit(String),
    #[error(
        "character {0:?} is not allowed in an app id (only A-Z a-z 0-9 _ and - in the last element)"
    )]
    BadChar(char),
    #[error("'-' is only allowed in the last element of an app id")]
    DashNotInLast,
}

/// A validated application id such as `org.example.App`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId(String);

impl AppId {
    /// Validates `s` with Flatpak's rules: three or more non-empty elements of
    /// `[A-Za-z0-9_-]`, none starting with a digit, `-` only in the last one,
    /// at most 255 characters.
    pub fn parse(s: &str) -> Result<Self, AppIdError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppId {
    type Err = AppIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<(), AppIdError> {
    if s.is_empty() {
        return Err(AppIdError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(AppIdError::TooLong);
    }
    if s.starts_with('.') {
        return Err(AppIdError::LeadingPeriod);
    }
    let elements: Vec<&str> = s.split('.').collect();
    let last = elements.len() - 1;
    for (i, element) in elements.iter().enumerate() {
        let Some(first) = element.chars().next() else {
            return Err(AppIdError::EmptyElement);
        };
        if first.is_ascii_digit() {
            return Err(AppIdError::LeadingDigit((*element).to_owned()));
        }
        for c in element.chars() {
            match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '_' => {}
                '-' if i == last => {}
                '-' => return Err(AppIdError::DashNotInLast),
                other => return Err(AppIdError::BadChar(other)),
            }
        }
    }
    if elements.len() < 3 {
        return Err(AppIdError::TooFewElements);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_flatpak_style_ids() {
        for ok in [
            "org.example.App",
            "org.gnome.Maps",
            "a.b.c",
            "io.github.foo_bar.Baz-1",
            "A.B.C",
        ] {
            assert!(AppId::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_bad_ids_with_the_reason() {
        assert_eq!(AppId::parse(""), Err(AppIdError::Empty));
        assert_eq!(AppId::parse("org.example"), Err(AppIdError::TooFewElements));
        assert_eq!(
            AppId::parse(".org.example.App"),
            Err(AppIdError::LeadingPeriod)
        );
        assert_eq!(AppId::parse("org..App"), Err(AppIdError::EmptyElement));
        assert_eq!(
            AppId::parse("org.example.App."),
            Err(AppIdError::EmptyElement)
        );
        assert_eq!(
            AppId::parse("org.1example.App"),
            Err(AppIdError::LeadingDigit("1example".into()))
        );
        assert_eq!(
            AppId::parse("org.ex-ample.App"),
            Err(AppIdError::DashNotInLast)
        );
        assert_eq!(
            AppId::parse("org.example.A/pp"),
            Err(AppIdError::BadChar('/'))
        );
        assert_eq!(
            AppId::parse("org.example.Äpp"),
            Err(AppIdError::BadChar('Ä'))
        );
        let long = format!("org.example.{}", "a".repeat(250));
        assert_eq!(AppId::parse(&long), Err(AppIdError::TooLong));
        let max = format!("org.example.{}", "a".repeat(MAX_LEN - 12));
        assert_eq!(max.len(), MAX_LEN);
        assert!(AppId::parse(&max).is_ok());
    }
}
