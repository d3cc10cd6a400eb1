//! roost: the broker node (CLI, config, node assembly), its management API
//! (`mgmt`) and the operator CLI that talks to it (`ctl`).

pub mod cli;
pub mod config;
pub mod ctl;
pub mod mgmt;
pub mod node;
pub mod sys;
