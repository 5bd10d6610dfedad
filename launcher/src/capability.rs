//! Privilege drop: every capability set emptied (bounding, ambient,
//! inheritable, permitted, effective) and no_new_privs, so neither setuid
//! binaries nor file capabilities can give anything back on exec.

/// Errors while dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("{op}: {source}")]
    Prctl {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn prctl(
    op: &'static str,
    option: libc::c_int,
    arg2: libc::c_ulong,
) -> Result<libc::c_int, CapabilityError> {
    // SAFETY: the prctl options used here take integer arguments only.
    let rc = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(CapabilityError::Prctl {
            op,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

/// Empties the bounding and ambient sets, then capset(2)s the other three to
/// zero. The bounding set needs CAP_SETPCAP, so it goes first.
pub fn drop_all() -> Result<(), CapabilityError> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past CAP_LAST_CAP
            }
            return Err(CapabilityError::Prctl {
                op: "prctl(PR_CAPBSET_DROP)",
                source: e,
            });
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(CapabilityError::Prctl {
            op: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            source: std::io::Error::last_os_error(),
        });
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit data records.
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the v3 layout of capset(2) (two data
    // records); the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc < 0 {
        return Err(CapabilityError::Prctl {
            op: "capset",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// PR_SET_NO_NEW_PRIVS: exec can never grant privileges again.
pub fn no_new_privs() -> Result<(), CapabilityError> {
    prctl("prctl(PR_SET_NO_NEW_PRIVS)", libc::PR_SET_NO_NEW_PRIVS, 1).map(|_| ())
}
