//! pyscaler-ssh (filled by its own issue).
