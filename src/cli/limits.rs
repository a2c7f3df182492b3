//! The open-files limit, raised at start as Knot and NSD do, and the TCP connections it allows.

/// 1000 TCP connections, or half the open-files limit (raised to its hard maximum first, as
/// Knot and NSD do) when that is lower.
pub(super) fn default_tcp_connections() -> usize {
    let files = raise_open_files_limit();
    usize::try_from(files / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, 1000)
}

/// Raises the soft open-files limit to the hard one; the limit in force.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}
