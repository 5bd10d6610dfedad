//! The portal frontend. Not built yet.
