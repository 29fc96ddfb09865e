//! Why a Kerberos login failed: one kind per cause a person can act on, each with its own status,
//! code, words for the user and a log line for the operator that names the fix.

use std::fmt;

/// The causes of a failed Negotiate login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The `Authorization` header is not `Negotiate <base64>`.
    Malformed,
    /// The browser fell back to NTLM: Kerberos is not working for this site.
    Ntlm,
    /// Decodes, but is neither Kerberos nor SPNEGO.
    NotKerberos,
    /// A valid ticket for a service principal this site does not serve.
    WrongService,
    /// The keytab has no key for the ticket's principal or key version.
    NoKey,
    /// The keytab's key does not decrypt the ticket (the account's password changed since export).
    StaleKey,
    /// The keytab has the principal and version, but not the ticket's encryption type.
    WrongEnctype,
    TicketExpired,
    ClockSkew,
    Replay,
    /// The replay cache cannot grow because its disk is full (or over quota). The login is
    /// refused rather than accepted without replay protection.
    ReplayCacheFull,
    /// Authenticated, but the principal's realm is not in `realm_map`.
    UnmappedRealm,
    /// Authenticated, but as a principal that is not a plain user (`alice/admin@R`).
    UnusablePrincipal,
    /// The second leg of a multi-leg exchange came after its context was gone.
    ExchangeLost,
    /// The keytab cannot be used at all (server-side).
    Keytab,
    Other,
}

/// A failed Negotiate login: the cause and GSSAPI's own words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateError {
    pub kind: Failure,
    pub detail: String,
}

impl NegotiateError {
    pub fn new(kind: Failure, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// 400 for requests that are not a Kerberos login at all, 503 when the gateway's own keytab
    /// or replay cache fails, 401 for every refused login.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            Failure::Malformed | Failure::NotKerberos => http::StatusCode::BAD_REQUEST,
            Failure::Keytab | Failure::ReplayCacheFull => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.kind {
            Failure::Malformed => "negotiate_malformed",
            Failure::Ntlm => "negotiate_ntlm",
            Failure::NotKerberos => "negotiate_not_kerberos",
            Failure::WrongService => "negotiate_wrong_service",
            Failure::NoKey => "negotiate_no_key",
            Failure::StaleKey => "negotiate_stale_key",
            Failure::WrongEnctype => "negotiate_enctype",
            Failure::TicketExpired => "negotiate_ticket_expired",
            Failure::ClockSkew => "negotiate_clock_skew",
            Failure::Replay => "negotiate_replay",
            Failure::ReplayCacheFull => "negotiate_replay_cache_full",
            Failure::UnmappedRealm => "negotiate_unmapped_realm",
            Failure::UnusablePrincipal => "negotiate_unusable_principal",
            Failure::ExchangeLost => "negotiate_exchange_lost",
            Failure::Keytab => "negotiate_keytab",
            Failure::Other => "negotiate_failed",
        }
    }

    /// What the person at the browser is told.
    pub fn public_message(&self) -> &'static str {
        match self.kind {
            Failure::Malformed | Failure::NotKerberos => {
                "Your browser sent a Windows sign-in the gateway cannot read."
            }
            Failure::Ntlm => {
                "Your browser tried the older NTLM sign-in, which means Kerberos is not working for this site. Check that you opened the site by its full name (not an IP address), that your computer is signed in to the domain, and that the site is in your browser's Local intranet zone or on its AuthServerAllowlist. If it still fails, your administrator needs to register the site's SPN (HTTP/<site name>) for the gateway's service account."
            }
            Failure::WrongService | Failure::NoKey | Failure::StaleKey | Failure::WrongEnctype => {
                "Your Windows sign-in ticket is for a different server name or an older key of this site. Open the site by the name your administrator gave you; if that is what you did, the administrator must check the gateway's keytab."
            }
            Failure::TicketExpired => {
                "Your Windows sign-in ticket has expired. Lock and unlock your computer (or sign out and in) to get a fresh one, then try again."
            }
            Failure::ClockSkew => {
                "Your computer's clock and the server's differ by more than Kerberos allows (usually 5 minutes). Correct the clock, then try again."
            }
            Failure::Replay => {
                "This sign-in was already used once. Try again; your browser will make a fresh one."
            }
            Failure::ReplayCacheFull => {
                "Windows sign-in is not available for a moment. Please try again in a few minutes; if it keeps failing, tell your administrator (the gateway log names the cause)."
            }
            Failure::UnmappedRealm => {
                "Your account's domain is not allowed to use this site."
            }
            Failure::UnusablePrincipal => {
                "You signed in with an account that is not a user account (a service or admin instance). Sign in with your own user account."
            }
            Failure::ExchangeLost => "The sign-in took too long. Please try again.",
            Failure::Keytab => {
                "Windows sign-in is not available right now. Your administrator can find the cause in the gateway log."
            }
            Failure::Other => {
                "Windows sign-in failed. Your administrator can find the cause in the gateway log."
            }
        }
    }

    /// What the operator should do, for the log line.
    fn fix(&self) -> &'static str {
        match self.kind {
            Failure::Malformed => "the client sent a broken Authorization header; nothing to fix on the gateway",
            Failure::Ntlm => "usual causes: no SPN HTTP/<host> for the gateway's service account (setspn -S), the site not in the browser's intranet zone / AuthServerAllowlist, a client that is not domain-joined, or a host name (IP, alias) other than the one in the SPN",
            Failure::NotKerberos => "the token is neither Kerberos nor SPNEGO",
            Failure::WrongService => "the ticket is for another service principal: the user opened the site under another name, or auth.negotiate.service_principal is wrong",
            Failure::NoKey => "the keytab lacks the key (principal or kvno) the ticket was made for: re-export the keytab (ktpass) after the SPN or password changed, or check the host name users type",
            Failure::StaleKey => "the keytab's key no longer matches the service account's password: re-export the keytab",
            Failure::WrongEnctype => "the ticket uses an encryption type the keytab has no key for (often RC4 tickets against an AES-only keytab): enable \"This account supports Kerberos AES 256 bit encryption\" on the service account, or export the key for the ticket's enctype",
            Failure::TicketExpired => "the client's ticket expired; the client must renew it",
            Failure::ClockSkew => "the clocks of the client, the KDC and the gateway differ by more than the allowed skew: sync them (NTP)",
            Failure::Replay => "an authenticator was presented twice (a replay, or a client that repeats tokens)",
            Failure::ReplayCacheFull => "the disk holding the replay cache is full, so the gateway cannot record the authenticator and refuses the login rather than accept it without replay protection: free space on that disk (or point auth.negotiate.replay_cache at one with room); logins work again as soon as there is space, without a restart",
            Failure::UnmappedRealm => "add the realm to auth.negotiate.realm_map if its users should get in",
            Failure::UnusablePrincipal => "only name@REALM principals become Qlik users; the client used a name/instance principal",
            Failure::ExchangeLost => "the client's next leg arrived after the gateway dropped the unfinished exchange (restart or timeout)",
            Failure::Keytab => "the keytab cannot be read or used: check auth.negotiate.keytab, its permissions and format",
            Failure::Other => "see the GSSAPI detail",
        }
    }
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Kerberos login refused ({}): {}; {}",
            self.code(),
            self.detail,
            self.fix()
        )
    }
}

impl std::error::Error for NegotiateError {}
