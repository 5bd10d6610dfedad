//! The one error type a portal-style service replies with.
//!
//! Upstream's portals answer with the `org.freedesktop.portal.Error.*` names
//! from xdg-desktop-portal's `src/xdp-utils.h` (`XdgDesktopPortalErrorEnum`);
//! clients such as libportal and ashpd match on those names. Each service
//! converts its own error enum into [`PortalError`] once, at the D-Bus
//! boundary, and keeps paths and SQL in its log rather than in the reply.

/// `org.freedesktop.portal.Error.*`, with upstream's names exactly.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.portal.Error")]
pub enum PortalError {
    /// A zbus failure while handling the call (sent under zbus's own name).
    #[zbus(error)]
    ZBus(zbus::Error),
    Failed(String),
    InvalidArgument(String),
    NotFound(String),
    Exists(String),
    NotAllowed(String),
    Cancelled(String),
    WindowDestroyed(String),
}

#[cfg(test)]
mod tests {
    use super::PortalError;
    use zbus::DBusError;

    #[test]
    fn names_are_upstreams() {
        let cases = [
            (PortalError::Failed(String::new()), "Failed"),
            (
                PortalError::InvalidArgument(String::new()),
                "InvalidArgument",
            ),
            (PortalError::NotFound(String::new()), "NotFound"),
            (PortalError::Exists(String::new()), "Exists"),
            (PortalError::NotAllowed(String::new()), "NotAllowed"),
            (PortalError::Cancelled(String::new()), "Cancelled"),
            (
                PortalError::WindowDestroyed(String::new()),
                "WindowDestroyed",
            ),
        ];
        for (err, name) in cases {
            assert_eq!(
                err.name().as_str(),
                format!("org.freedesktop.portal.Error.{name}")
            );
        }
    }
}
