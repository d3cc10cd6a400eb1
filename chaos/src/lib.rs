//! roost-chaos: Roost's load generator (`roost-chaos bench`) and its chaos
//! harness (`roost-chaos kill-restart|partition-heal|...`, docs/CHAOS.md).
//!
//! Modules:
//! - [`client`]: a minimal async MQTT client on the roost-protocol codec;
//! - [`bench`]: the load scenarios, exact message accounting, reports;
//! - [`procstat`]: CPU time and RSS of the broker process from procfs;
//! - [`rlimit`]: raising the open file limit for many connections;
//! - [`history`]: recording load clients and the history checker;
//! - [`proxy`]: the fault proxy every cluster link goes through;
//! - [`nodes`]: real `roost` node processes (start, kill, stop, restart);
//! - [`scenario`]: the chaos scenarios and their report.
//!
//! Depends only on roost-protocol among the workspace crates, so it builds
//! and runs against any MQTT broker (mosquitto included) without the broker
//! itself. Talks to brokers over real TCP only; never panics on what a
//! broker sends.

pub mod bench;
pub mod client;
pub mod history;
pub mod nodes;
pub mod procstat;
pub mod proxy;
pub mod rlimit;
pub mod scenario;
