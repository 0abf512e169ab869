//! pyscaler-aws (filled by its own issue).
