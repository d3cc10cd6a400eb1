//! `alarms`: the node's alarms (EMQX's `emqx_alarm` with `emqx_os_mon`'s
//! memory check). Today one: the memory high watermark.
//!
//! Every `interval` the actor reads the process's resident set size (VmRSS)
//! and raises the memory alarm when it is above `node.memory_high_watermark`
//! ([`Overload`](crate::overload::Overload) in `BrokerCtx`): the listeners
//! refuse new connections while it is raised. It is cleared once the RSS
//! is back under [`CLEAR_PERCENT`] of the watermark, so a node hovering at
//! the mark does not flap. Each transition is logged once
//! (`memory_alarm_raised`, `memory_alarm_cleared`, with `rss` and
//! `watermark`).
//!
//! A root child of its own, started before the listeners: the alarm is
//! node-wide (every listener reads one flag), it outlives listener
//! restarts, and other node alarms belong here. The flag lives in
//! `BrokerCtx`, not in this actor: a restart of `alarms` loses nothing and
//! its first check (in `pre_start`) logs nothing unless the state changed.

use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::broker::BrokerCtx;

/// The alarm clears below this share of the watermark (hysteresis).
pub const CLEAR_PERCENT: u64 = 95;

pub struct Alarms;

pub struct AlarmsArgs {
    pub ctx: Arc<BrokerCtx>,
    /// Time between two memory checks (`node.memory_check_interval`).
    pub interval: Duration,
}

pub enum AlarmsMsg {
    Check,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for AlarmsMsg {}

pub struct AlarmsState {
    ctx: Arc<BrokerCtx>,
    timer: JoinHandle<()>,
    /// The RSS could not be read (not Linux): said once.
    unavailable_logged: bool,
}

/// A change of the memory alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAlarmChange {
    Raised,
    Cleared,
}

/// The memory alarm's next state, given the current one, the RSS (`None`:
/// unknown) and the watermark (0 = off). Pure.
pub fn memory_alarm_change(
    raised: bool,
    rss: Option<u64>,
    watermark: u64,
) -> Option<MemoryAlarmChange> {
    if watermark == 0 {
        return raised.then_some(MemoryAlarmChange::Cleared);
    }
    let rss = rss?;
    if !raised && rss > watermark {
        Some(MemoryAlarmChange::Raised)
    } else if raised && u128::from(rss) * 100 < u128::from(watermark) * u128::from(CLEAR_PERCENT) {
        Some(MemoryAlarmChange::Cleared)
    } else {
        None
    }
}

impl Actor for Alarms {
    type Msg = AlarmsMsg;
    type State = AlarmsState;
    type Arguments = AlarmsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AlarmsMsg>,
        args: AlarmsArgs,
    ) -> Result<AlarmsState, ActorProcessingErr> {
        let timer = myself.send_interval(args.interval, || AlarmsMsg::Check);
        let mut st = AlarmsState {
            ctx: args.ctx,
            timer,
            unavailable_logged: false,
        };
        // Before the listeners start (they come after us in the tree).
        st.check_memory();
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: ActorRef<AlarmsMsg>,
        st: &mut AlarmsState,
    ) -> Result<(), ActorProcessingErr> {
        st.timer.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AlarmsMsg>,
        AlarmsMsg::Check: AlarmsMsg,
        st: &mut AlarmsState,
    ) -> Result<(), ActorProcessingErr> {
        st.check_memory();
        Ok(())
    }
}

impl AlarmsState {
    fn check_memory(&mut self) {
        let overload = &self.ctx.overload;
        let watermark = overload.memory_high_watermark();
        let rss = if watermark == 0 {
            None
        } else {
            process_rss_bytes()
        };
        if watermark > 0 && rss.is_none() && !self.unavailable_logged {
            self.unavailable_logged = true;
            warn!(watermark, "memory_check_unavailable");
        }
        let rss_field = rss.unwrap_or(0);
        match memory_alarm_change(overload.memory_alarm(), rss, watermark) {
            Some(MemoryAlarmChange::Raised) => {
                overload.set_memory_alarm(true);
                warn!(rss = rss_field, watermark, "memory_alarm_raised");
            }
            Some(MemoryAlarmChange::Cleared) => {
                overload.set_memory_alarm(false);
                info!(rss = rss_field, watermark, "memory_alarm_cleared");
            }
            None => {}
        }
    }
}

/// VmRSS from `/proc/self/status`, in bytes (Linux only).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryAlarmChange::*;

    #[test]
    fn raised_above_the_watermark_cleared_below_95_percent() {
        assert_eq!(memory_alarm_change(false, Some(1_001), 1_000), Some(Raised));
        assert_eq!(
            memory_alarm_change(false, Some(1_000), 1_000),
            None,
            "at the mark"
        );
        assert_eq!(
            memory_alarm_change(true, Some(2_000), 1_000),
            None,
            "still above"
        );
        assert_eq!(
            memory_alarm_change(true, Some(960), 1_000),
            None,
            "hysteresis"
        );
        assert_eq!(memory_alarm_change(true, Some(949), 1_000), Some(Cleared));
        assert_eq!(memory_alarm_change(false, Some(10), 1_000), None);
    }

    #[test]
    fn a_watermark_of_zero_is_off_and_clears_a_raised_alarm() {
        assert_eq!(memory_alarm_change(false, Some(u64::MAX), 0), None);
        assert_eq!(memory_alarm_change(true, Some(u64::MAX), 0), Some(Cleared));
        assert_eq!(memory_alarm_change(true, None, 0), Some(Cleared));
    }

    #[test]
    fn an_unknown_rss_changes_nothing() {
        assert_eq!(memory_alarm_change(false, None, 1), None);
        assert_eq!(memory_alarm_change(true, None, 1), None);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert_eq!(
            memory_alarm_change(true, Some(u64::MAX - 1), u64::MAX),
            None
        );
        assert_eq!(
            memory_alarm_change(false, Some(u64::MAX), u64::MAX - 1),
            Some(Raised)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\troost\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn the_rss_of_this_process_is_read() {
        assert!(process_rss_bytes().is_some_and(|b| b > 0));
    }
}
