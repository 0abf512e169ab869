//! pyscaler-notify (filled by its own issue).
