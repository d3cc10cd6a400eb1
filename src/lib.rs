//! roost: the broker node (CLI, config, node assembly).
