//! roost: the broker node (CLI, config, node assembly).

pub mod cli;
pub mod config;
pub mod node;
