//! Does a live object serve a standard interface exactly as specified?
//!
//! Upstream ships each interface's XML (Debian: xdg-desktop-portal-dev, in
//! `/usr/share/dbus-1/interfaces`). Every method, signal and property there
//! must exist in our introspection with the same argument types in the same
//! order and directions, and properties with the same type and access.
//! Argument names are not compared (they never reach the wire), and members
//! we have beyond the reference are allowed: newer versions add members.

use std::fmt;
use std::path::{Path, PathBuf};

use zbus_xml::{Arg, ArgDirection, Interface, Node, PropertyAccess};

/// Where Debian's xdg-desktop-portal-dev puts upstream's interface XML.
pub const INTERFACES_DIR: &str = "/usr/share/dbus-1/interfaces";

/// One way the live object differs from the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    MissingInterface {
        interface: String,
    },
    MissingMethod {
        interface: String,
        method: String,
    },
    MethodArgs {
        interface: String,
        method: String,
        expected: String,
        found: String,
    },
    MissingSignal {
        interface: String,
        signal: String,
    },
    SignalArgs {
        interface: String,
        signal: String,
        expected: String,
        found: String,
    },
    MissingProperty {
        interface: String,
        property: String,
    },
    PropertyType {
        interface: String,
        property: String,
        expected: String,
        found: String,
    },
    PropertyAccess {
        interface: String,
        property: String,
        expected: String,
        found: String,
    },
    /// Served but absent from the reference: only an error for interfaces
    /// we define ourselves ([`check_object_exact`]).
    Undocumented {
        interface: String,
        kind: &'static str,
        member: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingInterface { interface } => {
                write!(f, "interface {interface} is not served")
            }
            Mismatch::MissingMethod { interface, method } => {
                write!(f, "method {interface}.{method} is missing")
            }
            Mismatch::MethodArgs {
                interface,
                method,
                expected,
                found,
            } => write!(
                f,
                "method {interface}.{method} has arguments ({found}), expected ({expected})"
            ),
            Mismatch::MissingSignal { interface, signal } => {
                write!(f, "signal {interface}.{signal} is missing")
            }
            Mismatch::SignalArgs {
                interface,
                signal,
                expected,
                found,
            } => write!(
                f,
                "signal {interface}.{signal} has arguments ({found}), expected ({expected})"
            ),
            Mismatch::MissingProperty {
                interface,
                property,
            } => write!(f, "property {interface}.{property} is missing"),
            Mismatch::PropertyType {
                interface,
                property,
                expected,
                found,
            } => write!(
                f,
                "property {interface}.{property} has type {found}, expected {expected}"
            ),
            Mismatch::PropertyAccess {
                interface,
                property,
                expected,
                found,
            } => write!(
                f,
                "property {interface}.{property} has access {found}, expected {expected}"
            ),
            Mismatch::Undocumented {
                interface,
                kind,
                member,
            } => write!(
                f,
                "{kind} {interface}.{member} is served but not in the reference"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the {what} introspection XML: {source}")]
    Parse {
        what: &'static str,
        source: zbus_xml::Error,
    },
    #[error("introspecting {path} on {destination}: {source}")]
    Introspect {
        destination: String,
        path: String,
        source: Box<zbus::fdo::Error>,
    },
    #[error("the reference {0} declares no interface")]
    EmptyReference(PathBuf),
}

/// Compares every interface of `reference` (an upstream XML document)
/// with the same-named interface of `live` (an object's introspection).
pub fn compare(reference: &str, live: &str) -> Result<Vec<Mismatch>, ConformanceError> {
    let reference = parse("reference", reference)?;
    let live = parse("live", live)?;
    Ok(compare_nodes(&reference, &live))
}

fn parse<'a>(what: &'static str, xml: &'a str) -> Result<Node<'a>, ConformanceError> {
    Node::from_reader(xml.as_bytes()).map_err(|source| ConformanceError::Parse { what, source })
}

/// [`compare`] on documents already parsed, so a caller that inspected the
/// reference first does not parse it again.
fn compare_nodes(reference: &Node<'_>, live: &Node<'_>) -> Vec<Mismatch> {
    reference
        .interfaces()
        .iter()
        .flat_map(|want| {
            let name = want.name();
            let have = live.interfaces().iter().find(|i| i.name() == name);
            compare_interface(want, have)
        })
        .collect()
}

/// The mismatches between one reference interface and what we serve.
pub fn compare_interface(want: &Interface<'_>, have: Option<&Interface<'_>>) -> Vec<Mismatch> {
    let interface = want.name().to_string();
    let Some(have) = have else {
        return vec![Mismatch::MissingInterface { interface }];
    };
    let mut out = Vec::new();
    for method in want.methods() {
        let name = method.name();
        match have.methods().iter().find(|m| m.name() == name) {
            None => out.push(Mismatch::MissingMethod {
                interface: interface.clone(),
                method: name.to_string(),
            }),
            Some(ours) => {
                let (expected, found) = (
                    arg_list(method.args(), ArgDirection::In),
                    arg_list(ours.args(), ArgDirection::In),
                );
                if expected != found {
                    out.push(Mismatch::MethodArgs {
                        interface: interface.clone(),
                        method: name.to_string(),
                        expected,
                        found,
                    });
                }
            }
        }
    }
    for signal in want.signals() {
        let name = signal.name();
        match have.signals().iter().find(|s| s.name() == name) {
            None => out.push(Mismatch::MissingSignal {
                interface: interface.clone(),
                signal: name.to_string(),
            }),
            Some(ours) => {
                // A signal's arguments are all "out"; the XML may say so or not.
                let (expected, found) = (
                    arg_list(signal.args(), ArgDirection::Out),
                    arg_list(ours.args(), ArgDirection::Out),
                );
                if expected != found {
                    out.push(Mismatch::SignalArgs {
                        interface: interface.clone(),
                        signal: name.to_string(),
                        expected,
                        found,
                    });
                }
            }
        }
    }
    for property in want.properties() {
        let name = property.name();
        match have.properties().iter().find(|p| p.name() == name) {
            None => out.push(Mismatch::MissingProperty {
                interface: interface.clone(),
                property: name.to_string(),
            }),
            Some(ours) => {
                if property.ty() != ours.ty() {
                    out.push(Mismatch::PropertyType {
                        interface: interface.clone(),
                        property: name.to_string(),
                        expected: property.ty().inner().to_string(),
                        found: ours.ty().inner().to_string(),
                    });
                }
                if property.access() != ours.access() {
                    out.push(Mismatch::PropertyAccess {
                        interface: interface.clone(),
                        property: name.to_string(),
                        expected: access(property.access()).into(),
                        found: access(ours.access()).into(),
                    });
                }
            }
        }
    }
    out
}

/// "in s, in s, out a{sas}": types with directions, in order.
fn arg_list(args: &[Arg], default: ArgDirection) -> String {
    args.iter()
        .map(|arg| {
            let dir = match arg.direction().unwrap_or(default) {
                ArgDirection::In => "in",
                ArgDirection::Out => "out",
            };
            format!("{dir} {}", arg.ty().inner())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn access(a: PropertyAccess) -> &'static str {
    match a {
        PropertyAccess::Read => "read",
        PropertyAccess::Write => "write",
        PropertyAccess::ReadWrite => "readwrite",
    }
}

/// The reference XML for `interface` in [`INTERFACES_DIR`], if installed.
pub fn reference_path(interface: &str) -> PathBuf {
    Path::new(INTERFACES_DIR).join(format!("{interface}.xml"))
}

/// The introspection XML of `path` on `destination`.
async fn introspect(
    conn: &zbus::Connection,
    destination: &str,
    path: &str,
) -> Result<String, ConformanceError> {
    let introspect_err = |source: zbus::fdo::Error| ConformanceError::Introspect {
        destination: destination.to_owned(),
        path: path.to_owned(),
        source: Box::new(source),
    };
    let proxy = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination(destination.to_owned())
        .and_then(|b| b.path(path.to_owned()))
        .map_err(|e| introspect_err(e.into()))?
        .build()
        .await
        .map_err(|e| introspect_err(e.into()))?;
    proxy.introspect().await.map_err(introspect_err)
}

/// Introspects `path` on `destination` and compares it with the reference
/// file at `reference`.
pub async fn check_object(
    conn: &zbus::Connection,
    destination: &str,
    path: &str,
    reference: &Path,
) -> Result<Vec<Mismatch>, ConformanceError> {
    let text = std::fs::read_to_string(reference).map_err(|source| ConformanceError::Read {
        path: reference.to_owned(),
        source,
    })?;
    let live = introspect(conn, destination, path).await?;
    let want = parse("reference", &text)?;
    if want.interfaces().is_empty() {
        return Err(ConformanceError::EmptyReference(reference.to_owned()));
    }
    let have = parse("live", &live)?;
    Ok(compare_nodes(&want, &have))
}

/// [`check_object`] for an interface we define ourselves: besides every
/// member of `reference` being served, the object serves no member of those
/// interfaces that `reference` lacks, so the published XML cannot fall
/// behind the code.
pub async fn check_object_exact(
    conn: &zbus::Connection,
    destination: &str,
    path: &str,
    reference: &Path,
) -> Result<Vec<Mismatch>, ConformanceError> {
    let mut mismatches = check_object(conn, destination, path, reference).await?;
    let text = std::fs::read_to_string(reference).map_err(|source| ConformanceError::Read {
        path: reference.to_owned(),
        source,
    })?;
    let live = introspect(conn, destination, path).await?;
    mismatches.extend(undocumented(
        &parse("reference", &text)?,
        &parse("live", &live)?,
    ));
    Ok(mismatches)
}

/// The members `live` serves in the interfaces `reference` declares that
/// `reference` does not name.
fn undocumented(reference: &Node<'_>, live: &Node<'_>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for want in reference.interfaces() {
        let Some(have) = live.interfaces().iter().find(|i| i.name() == want.name()) else {
            continue;
        };
        let interface = want.name().to_string();
        let mut extra = |kind: &'static str, member: String| {
            out.push(Mismatch::Undocumented {
                interface: interface.clone(),
                kind,
                member,
            })
        };
        for m in have.methods() {
            if !want.methods().iter().any(|w| w.name() == m.name()) {
                extra("method", m.name().to_string());
            }
        }
        for sig in have.signals() {
            if !want.signals().iter().any(|w| w.name() == sig.name()) {
                extra("signal", sig.name().to_string());
            }
        }
        for p in have.properties() {
            if !want.properties().iter().any(|w| w.name() == p.name()) {
                extra("property", p.name().to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = r#"<!DOCTYPE node PUBLIC
"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- a comment -->
<node name="/">
  <interface name='org.example.Iface'>
    <property name="version" type="u" access="read"/>
    <method name="Lookup">
      <arg name='table' type='s' direction='in'/>
      <arg name='id' type='s' direction='in'/>
      <arg name='permissions' type='a{sas}' direction='out'/>
    </method>
    <method name="List">
      <arg name='table' type='s' direction='in'/>
      <arg name='ids' type='as' direction='out'/>
    </method>
    <signal name="Changed">
      <arg name='table' type='s' direction='out'/>
      <arg name='deleted' type='b' direction='out'/>
    </signal>
  </interface>
</node>"#;

    /// `REFERENCE` as zbus writes it (no directions on signal args, other
    /// argument names, another interface beside it), with `edit` applied.
    fn live(edit: impl Fn(String) -> String) -> String {
        edit(
            r#"<node>
  <interface name="org.freedesktop.DBus.Peer"><method name="Ping"/></interface>
  <interface name="org.example.Iface">
    <method name="Lookup">
      <arg name="t" type="s" direction="in"/>
      <arg name="i" type="s" direction="in"/>
      <arg name="permissions" type="a{sas}" direction="out"/>
    </method>
    <method name="List">
      <arg name="table" type="s" direction="in"/>
      <arg name="ids" type="as" direction="out"/>
    </method>
    <signal name="Changed">
      <arg name="table" type="s"/>
      <arg name="deleted" type="b"/>
    </signal>
    <property name="version" type="u" access="read"/>
  </interface>
</node>"#
                .to_owned(),
        )
    }

    fn mismatches(edit: impl Fn(String) -> String) -> Vec<Mismatch> {
        compare(REFERENCE, &live(edit)).unwrap()
    }

    #[test]
    fn the_same_interface_conforms() {
        assert_eq!(mismatches(|s| s), []);
    }

    #[test]
    fn members_beyond_our_own_reference_are_undocumented() {
        let undoc = |edit: fn(String) -> String| {
            let reference = parse("reference", REFERENCE).unwrap();
            let text = live(edit);
            let live = parse("live", &text).unwrap();
            undocumented(&reference, &live)
        };
        // Other interfaces on the object (Peer here) are not ours to list.
        assert_eq!(undoc(|s| s), []);
        let found = undoc(|s| {
            s.replace(
                r#"<property name="version""#,
                r#"<method name="Extra"/><signal name="Gone"/><property name="mode" type="s" access="read"/><property name="version""#,
            )
        });
        let kinds: Vec<(&str, &str)> = found
            .iter()
            .map(|m| match m {
                Mismatch::Undocumented { kind, member, .. } => (*kind, member.as_str()),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("method", "Extra"),
                ("signal", "Gone"),
                ("property", "mode")
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "method org.example.Iface.Extra is served but not in the reference"
        );
    }

    #[test]
    fn a_renamed_method_is_missing() {
        let found = mismatches(|s| s.replace(r#"name="Lookup""#, r#"name="Lookupx""#));
        assert_eq!(
            found,
            [Mismatch::MissingMethod {
                interface: "org.example.Iface".into(),
                method: "Lookup".into()
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "method org.example.Iface.Lookup is missing"
        );
    }

    #[test]
    fn a_changed_arg_type_or_direction_is_reported() {
        let found = mismatches(|s| s.replace(r#"name="i" type="s""#, r#"name="i" type="u""#));
        assert_eq!(
            found,
            [Mismatch::MethodArgs {
                interface: "org.example.Iface".into(),
                method: "Lookup".into(),
                expected: "in s, in s, out a{sas}".into(),
                found: "in s, in u, out a{sas}".into(),
            }]
        );
        let found = mismatches(|s| {
            s.replace(
                r#"name="ids" type="as" direction="out""#,
                r#"name="ids" type="as" direction="in""#,
            )
        });
        assert!(
            matches!(&found[..], [Mismatch::MethodArgs { method, .. }] if method == "List"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_signal_or_changed_signal_args_are_reported() {
        let found =
            mismatches(|s| s.replace(r#"<signal name="Changed">"#, r#"<signal name="Other">"#));
        assert_eq!(
            found,
            [Mismatch::MissingSignal {
                interface: "org.example.Iface".into(),
                signal: "Changed".into()
            }]
        );
        let found =
            mismatches(|s| s.replace(r#"name="deleted" type="b""#, r#"name="deleted" type="s""#));
        assert!(
            matches!(&found[..], [Mismatch::SignalArgs { expected, found, .. }] if expected == "out s, out b" && found == "out s, out s"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_or_different_property_is_reported() {
        let found =
            mismatches(|s| s.replace(r#"<property name="version" type="u" access="read"/>"#, ""));
        assert_eq!(
            found,
            [Mismatch::MissingProperty {
                interface: "org.example.Iface".into(),
                property: "version".into()
            }]
        );
        let found = mismatches(|s| {
            s.replace(
                r#"<property name="version" type="u" access="read"/>"#,
                r#"<property name="version" type="s" access="readwrite"/>"#,
            )
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(matches!(found[0], Mismatch::PropertyType { .. }));
        assert!(matches!(found[1], Mismatch::PropertyAccess { .. }));
    }

    #[test]
    fn extra_members_are_allowed() {
        let found = mismatches(|s| {
            s.replace(
                "</interface>\n</node>",
                r#"<method name="New"><arg type="s" direction="in"/></method>
    <signal name="Added"/><property name="extra" type="b" access="read"/>
  </interface>
</node>"#,
            )
        });
        assert_eq!(found, []);
    }

    #[test]
    fn a_missing_interface_is_reported() {
        let found = mismatches(|s| s.replace("org.example.Iface", "org.example.Other"));
        assert_eq!(
            found,
            [Mismatch::MissingInterface {
                interface: "org.example.Iface".into()
            }]
        );
    }

    #[test]
    fn broken_xml_is_an_error_not_a_pass() {
        assert!(matches!(
            compare(REFERENCE, "<node><interface"),
            Err(ConformanceError::Parse { what: "live", .. })
        ));
    }
}
