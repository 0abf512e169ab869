//! The engine's own tests use the public testing helpers under their old names.

pub(crate) use crate::testing::{CallLog as Log, Probe};
