//! Raising this process's open file limit (`RLIMIT_NOFILE`) so a scenario
//! with thousands of connections does not fail half-way with EMFILE.

use anyhow::{bail, Result};

/// Makes sure at least `needed` file descriptors may be open: raises the
/// soft limit, and the hard one too when allowed (root). Returns the soft
/// limit in force. Fails with an explanation when it cannot.
pub fn ensure_nofile(needed: libc::rlim_t) -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= needed {
        return Ok(soft);
    }
    let want = libc::rlimit {
        rlim_cur: needed,
        rlim_max: hard.max(needed),
    };
    // SAFETY: `want` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "need {needed} open files but the limit is {soft} (hard {hard}) and raising it \
             failed: {err}; run `ulimit -n {needed}` as a user allowed to, or ask for fewer \
             connections"
        );
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_need_is_already_met() {
        assert!(ensure_nofile(16).expect("limit") >= 16);
    }
}
