//! The launcher. Not built yet: see issue 3.
