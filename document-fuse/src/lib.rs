//! The document portal. Not built yet.
