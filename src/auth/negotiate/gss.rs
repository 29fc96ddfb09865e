//! The GSSAPI acceptor: credentials from the configured keytab and one `gss_accept_sec_context`
//! step at a time. Every call here may block (file reads, replay cache), so callers run them on
//! the blocking pool, never on the async runtime.
//!
//! The one module allowed `unsafe` (the workspace denies it): the raw GSSAPI calls libgssapi does
//! not wrap (`gss_acquire_cred_from` with a keytab store) and `geteuid` for MIT's replay cache name.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;
use std::ptr;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::Cred;
use libgssapi::error::{Error as GssError, MajorFlags};
use libgssapi_sys as sys;

use super::error::{Failure, NegotiateError};

/// Acceptor credentials for every key of `keytab` (`gss_acquire_cred_from` with a credential
/// store, so the keytab is per gateway and not the process-wide `KRB5_KTNAME`).
pub(crate) fn acquire(keytab: &Path, replay_cache: Option<&str>) -> Result<Cred, GssError> {
    let bad_input = || GssError {
        major: MajorFlags::GSS_S_FAILURE,
        minor: 0,
    };
    let keytab = CString::new(format!("FILE:{}", keytab.display())).map_err(|_| bad_input())?;
    let rcache = match replay_cache {
        Some(r) => Some(CString::new(r).map_err(|_| bad_input())?),
        None => None,
    };
    let mut elements = vec![sys::gss_key_value_element_desc {
        key: c"keytab".as_ptr(),
        value: keytab.as_ptr(),
    }];
    if let Some(r) = &rcache {
        elements.push(sys::gss_key_value_element_desc {
            key: c"rcache".as_ptr(),
            value: r.as_ptr(),
        });
    }
    let store = sys::gss_key_value_set_desc {
        count: elements.len() as sys::OM_uint32,
        elements: elements.as_mut_ptr(),
    };
    let mut minor: sys::OM_uint32 = 0;
    let mut cred: sys::gss_cred_id_t = ptr::null_mut();
    // SAFETY: every pointer is valid for the call (`store`, `elements`, `keytab` and `rcache`
    // outlive it); null name, mech set and outputs are the documented "default / not wanted".
    let major = unsafe {
        sys::gss_acquire_cred_from(
            &mut minor,
            ptr::null_mut(),
            sys::_GSS_C_INDEFINITE,
            ptr::null_mut(),
            sys::GSS_C_ACCEPT as sys::gss_cred_usage_t,
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if major == sys::GSS_S_COMPLETE {
        // SAFETY: on success `cred` is a fresh handle we own; `Cred` releases it once.
        Ok(unsafe { Cred::from_c(cred) })
    } else {
        Err(GssError {
            major: MajorFlags::from_bits_retain(major),
            minor,
        })
    }
}

/// The file the replay cache `spec` (`auth.negotiate.replay_cache`; `None` for the library's
/// default) keeps its records in, as MIT krb5 (1.18 and later) resolves it, for messages. A
/// `default_rcache_name` in krb5.conf is not seen here.
pub(crate) fn replay_cache_file(spec: Option<&str>) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let spec = match spec {
        Some(s) => s.to_string(),
        None => env("KRB5RCACHENAME")
            .unwrap_or_else(|| format!("{}:", env("KRB5RCACHETYPE").as_deref().unwrap_or("dfl"))),
    };
    match spec.split_once(':') {
        Some(("dfl", _)) => {
            let dir = env("KRB5RCACHEDIR")
                .or_else(|| env("TMPDIR"))
                .unwrap_or_else(|| "/var/tmp".into());
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            format!("{}/krb5_{euid}.rcache2", dir.trim_end_matches('/'))
        }
        Some(("file2" | "file", path)) if !path.is_empty() => path.to_string(),
        _ => spec,
    }
}

/// What one accept step produced.
pub(crate) enum Step {
    /// The client is authenticated.
    Done {
        /// `alice@CORP.EXAMPLE.COM`
        client: String,
        /// The principal the ticket was for: `HTTP/bi.example.com@CORP.EXAMPLE.COM`.
        service: String,
        /// The mutual-authentication reply for the client, if GSSAPI made one.
        reply: Option<Vec<u8>>,
    },
    /// The exchange needs another leg: send `reply`, keep `ctx` for the client's next token.
    Continue { ctx: ServerCtx, reply: Vec<u8> },
}

/// Feeds `token` to `ctx` (a fresh context when `None`).
pub(crate) fn step(
    cred: &Cred,
    ctx: Option<ServerCtx>,
    token: &[u8],
) -> Result<Step, NegotiateError> {
    let mut ctx = ctx.unwrap_or_else(|| ServerCtx::new(Some(cred.clone())));
    let reply = ctx.step(token, None).map_err(classify)?;
    if !ctx.is_complete() {
        return Ok(Step::Continue {
            ctx,
            reply: reply.map(|b| b.to_vec()).unwrap_or_default(),
        });
    }
    let client = ctx
        .source_name()
        .map_err(|e| NegotiateError::new(Failure::Other, format!("no client name: {e}")))?
        .to_string();
    let service = ctx
        .target_name()
        .map_err(|e| NegotiateError::new(Failure::Other, format!("no service name: {e}")))?
        .to_string();
    Ok(Step::Done {
        client,
        service,
        reply: reply.map(|b| b.to_vec()).filter(|r| !r.is_empty()),
    })
}

/// Sorts a GSSAPI failure into the causes a person can act on.
///
/// MIT's mechanism glue renumbers the mechanism's minor codes, so the Kerberos error is read from
/// its message (`gss_display_status`, the com_err table text, which MIT does not translate for
/// the C locale a service runs in); the major status supplies the rest.
pub(crate) fn classify(e: GssError) -> NegotiateError {
    let detail = e.to_string();
    let routine = (e.major.bits() >> 16) & 0xff;
    let supplementary = e.major.bits() & 0xffff;
    NegotiateError::new(kind_of(routine, supplementary, &detail), detail)
}

// Routine error numbers (RFC 2744 §3.9.1) and supplementary bits.
const BAD_MECH: u32 = 1;
const BAD_SIG: u32 = 6;
const NO_CRED: u32 = 7;
const DEFECTIVE_TOKEN: u32 = 9;
const DEFECTIVE_CREDENTIAL: u32 = 10;
const CREDENTIALS_EXPIRED: u32 = 11;
const DUPLICATE_TOKEN: u32 = 1 << 1;
const OLD_TOKEN: u32 = 1 << 2;

fn kind_of(routine: u32, supplementary: u32, detail: &str) -> Failure {
    let d = detail.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
    // Accepting writes nothing but the replay cache record, so a full disk here is that cache
    // (MIT passes the errno of the failed write through as the minor status).
    if has(&["no space left on device", "disk quota exceeded"]) {
        Failure::ReplayCacheFull
    } else if has(&["request is a replay"]) || supplementary & (DUPLICATE_TOKEN | OLD_TOKEN) != 0 {
        Failure::Replay
    } else if has(&["ticket expired"]) || routine == CREDENTIALS_EXPIRED {
        Failure::TicketExpired
    } else if has(&["clock skew too great", "ticket not yet valid"]) {
        Failure::ClockSkew
    } else if has(&["wrong principal in request", "isn't for us"]) {
        Failure::WrongService
    } else if has(&[
        "key table file",
        "end of key table",
        "bad format in keytab",
        "keytab is nonexistent or empty",
    ]) {
        Failure::Keytab
    } else if has(&["but not with enctype"]) {
        Failure::WrongEnctype
    } else if has(&[
        "cannot decrypt ticket",
        "integrity check failed",
        "message stream modified",
    ]) {
        Failure::StaleKey
    } else if has(&[
        "no key table entry",
        "key table entry not found",
        "cannot find key",
        "service key not available",
        "version of key is not available",
        "not found in keytab",
        "keytab is likely out of date",
    ]) {
        Failure::NoKey
    } else if routine == NO_CRED || routine == DEFECTIVE_CREDENTIAL {
        Failure::Keytab
    } else if matches!(routine, BAD_MECH | DEFECTIVE_TOKEN | BAD_SIG) {
        Failure::NotKerberos
    } else {
        Failure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_files_are_named_as_mit_resolves_them() {
        assert_eq!(
            replay_cache_file(Some("file2:/var/lib/qlik-gateway/rcache")),
            "/var/lib/qlik-gateway/rcache"
        );
        assert_eq!(replay_cache_file(Some("none:")), "none:");
        // SAFETY: see replay_cache_file.
        let euid = unsafe { libc::geteuid() };
        let dfl = replay_cache_file(Some("dfl:"));
        assert!(dfl.ends_with(&format!("/krb5_{euid}.rcache2")), "{dfl}");
    }

    #[test]
    fn mit_messages_and_statuses_map_to_causes() {
        let failure = 13;
        for (detail, want) in [
            ("Unspecified GSS failure.  Minor code may provide more information (Request is a replay)", Failure::Replay),
            ("Unspecified GSS failure.  Minor code may provide more information (Ticket expired)", Failure::TicketExpired),
            ("Unspecified GSS failure.  Minor code may provide more information (Clock skew too great)", Failure::ClockSkew),
            ("Unspecified GSS failure.  Minor code may provide more information (Wrong principal in request)", Failure::WrongService),
            ("Unspecified GSS failure.  Minor code may provide more information (No key table entry found matching HTTP/other@R)", Failure::NoKey),
            ("Unspecified GSS failure.  Minor code may provide more information (Request ticket server HTTP/localhost@TEST.LOCAL kvno 3 not found in keytab; keytab is likely out of date)", Failure::NoKey),
            ("Unspecified GSS failure.  Minor code may provide more information (Key table file '/x' not found)", Failure::Keytab),
            ("Unspecified GSS failure.  Minor code may provide more information (Decrypt integrity check failed)", Failure::StaleKey),
            ("Unspecified GSS failure.  Minor code may provide more information (Request ticket server HTTP/bi@R kvno 3 enctype aes256-cts found in keytab but cannot decrypt ticket)", Failure::StaleKey),
            ("Unspecified GSS failure.  Minor code may provide more information (Request ticket server HTTP/bi@R kvno 3 found in keytab but not with enctype rc4-hmac)", Failure::WrongEnctype),
            ("Unspecified GSS failure.  Minor code may provide more information (No space left on device)", Failure::ReplayCacheFull),
            ("Unspecified GSS failure.  Minor code may provide more information (Disk quota exceeded)", Failure::ReplayCacheFull),
            ("Unspecified GSS failure.  Minor code may provide more information (something new)", Failure::Other),
        ] {
            assert_eq!(kind_of(failure, 0, detail), want, "{detail}");
        }
        assert_eq!(
            kind_of(DEFECTIVE_TOKEN, 0, "Defective token detected"),
            Failure::NotKerberos
        );
        assert_eq!(
            kind_of(BAD_MECH, 0, "An unsupported mechanism was requested"),
            Failure::NotKerberos
        );
        assert_eq!(
            kind_of(NO_CRED, 0, "No credentials were supplied"),
            Failure::Keytab
        );
        assert_eq!(
            kind_of(0, DUPLICATE_TOKEN, "The token was a duplicate"),
            Failure::Replay
        );
    }
}
