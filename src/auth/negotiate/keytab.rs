//! Reads the principal names out of an MIT/Windows keytab file (format 0x0502, what `ktutil`,
//! `kadmin ktadd` and Windows `ktpass` write), so that start-up, `check-config` and the reload
//! watcher can say which keys a keytab holds. Key material is skipped, never kept or shown; the
//! cryptography itself is GSSAPI's.

use std::fmt;
use std::path::{Path, PathBuf};

/// One key in a keytab: who it is for, its version number and encryption type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeytabEntry {
    /// `HTTP/bi.example.com@EXAMPLE.COM`
    pub principal: String,
    pub kvno: u32,
    pub enctype: u16,
}

impl KeytabEntry {
    /// The service part (`HTTP`), the host (`bi.example.com`) and the realm of a two-part name.
    pub fn service_host_realm(&self) -> Option<(&str, &str, &str)> {
        split_service_principal(&self.principal)
    }
}

/// Splits `SERVICE/host@REALM` into its parts.
pub(crate) fn split_service_principal(p: &str) -> Option<(&str, &str, &str)> {
    let (name, realm) = p.rsplit_once('@')?;
    let (service, host) = name.split_once('/')?;
    (!host.contains('/')).then_some((service, host, realm))
}

/// A keytab that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
// Public through the Kerberos acceptor's load errors; without the GSSAPI binding nothing outside reaches it.
#[cfg_attr(not(feature = "kerberos"), allow(unreachable_pub))]
pub enum KeytabError {
    #[error("keytab {path} cannot be read: {source}; check the path and that the gateway's user may read it")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a keytab ({why}); export it with ktpass or kadmin ktadd")]
    Format { path: PathBuf, why: String },
    #[error("keytab {path} holds no keys; export the service account's keys into it")]
    Empty { path: PathBuf },
}

/// The keys of the keytab at `path`, in file order.
pub(crate) fn read(path: &Path) -> Result<Vec<KeytabEntry>, KeytabError> {
    let bytes = std::fs::read(path).map_err(|source| KeytabError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &bytes)
}

/// The keys of keytab bytes read from `path` (named in errors).
pub(crate) fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<KeytabEntry>, KeytabError> {
    let entries = parse(bytes).map_err(|why| KeytabError::Format {
        path: path.to_path_buf(),
        why,
    })?;
    if entries.is_empty() {
        return Err(KeytabError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(entries)
}

/// Principals of `entries`, deduplicated, for messages ("HTTP/a@R, HTTP/b@R").
pub(crate) fn principal_list(entries: &[KeytabEntry]) -> String {
    let mut names: Vec<&str> = entries.iter().map(|e| e.principal.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a principal name is not UTF-8".to_string())
    }
}

fn parse(buf: &[u8]) -> Result<Vec<KeytabEntry>, String> {
    match buf {
        [0x05, 0x02, ..] => {}
        [0x05, 0x01, ..] => {
            return Err("keytab format version 1 is not supported; re-export it (version 2)".into())
        }
        _ => return Err("it does not start with the keytab magic 0x0502".into()),
    }
    let mut r = Reader { buf, pos: 2 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        if buf.len() - r.pos < 4 {
            // Some writers pad the end; fewer than four bytes cannot be an entry.
            break;
        }
        let size = r.u32()? as i32;
        if size == 0 {
            break;
        }
        if size < 0 {
            // A hole left by a deleted entry.
            r.take(size.unsigned_abs() as usize)?;
            continue;
        }
        let record = r.take(size as usize)?;
        out.push(parse_entry(record)?);
    }
    Ok(out)
}

fn parse_entry(record: &[u8]) -> Result<KeytabEntry, String> {
    let mut r = Reader {
        buf: record,
        pos: 0,
    };
    let components = r.u16()?;
    let realm = r.string()?;
    let mut parts = Vec::with_capacity(components as usize);
    for _ in 0..components {
        parts.push(r.string()?);
    }
    let _name_type = r.u32()?;
    let _timestamp = r.u32()?;
    let kvno8 = r.u8()?;
    let enctype = r.u16()?;
    let key_len = r.u16()? as usize;
    r.take(key_len)?;
    // The 32-bit kvno, when present, supersedes the 8-bit one (kvno > 255).
    let kvno = if record.len() - r.pos >= 4 {
        match r.u32()? {
            0 => u32::from(kvno8),
            v => v,
        }
    } else {
        u32::from(kvno8)
    };
    Ok(KeytabEntry {
        principal: format!("{}@{realm}", parts.join("/")),
        kvno,
        enctype,
    })
}

impl fmt::Display for KeytabEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (kvno {}, enctype {})",
            self.principal, self.kvno, self.enctype
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One keytab entry as `kadmin ktadd` writes it (the key bytes are zeros here).
    pub(crate) fn entry(components: &[&str], realm: &str, kvno: u32, enctype: u16) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend((components.len() as u16).to_be_bytes());
        e.extend((realm.len() as u16).to_be_bytes());
        e.extend(realm.as_bytes());
        for c in components {
            e.extend((c.len() as u16).to_be_bytes());
            e.extend(c.as_bytes());
        }
        e.extend(1u32.to_be_bytes());
        e.extend(0u32.to_be_bytes());
        e.push(kvno.min(255) as u8);
        e.extend(enctype.to_be_bytes());
        e.extend(32u16.to_be_bytes());
        e.extend([0u8; 32]);
        e.extend(kvno.to_be_bytes());
        let mut out = (e.len() as u32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    #[test]
    fn lists_principals_with_kvno_and_skips_holes() {
        let mut kt = vec![0x05, 0x02];
        kt.extend(entry(&["HTTP", "bi.example.com"], "EXAMPLE.COM", 3, 18));
        kt.extend((-8i32).to_be_bytes());
        kt.extend([0u8; 8]);
        kt.extend(entry(&["HTTP", "bi.example.com"], "EXAMPLE.COM", 300, 17));
        let e = parse(&kt).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].principal, "HTTP/bi.example.com@EXAMPLE.COM");
        assert_eq!((e[0].kvno, e[0].enctype), (3, 18));
        assert_eq!(e[1].kvno, 300);
        assert_eq!(
            e[0].service_host_realm(),
            Some(("HTTP", "bi.example.com", "EXAMPLE.COM"))
        );
        assert_eq!(principal_list(&e), "HTTP/bi.example.com@EXAMPLE.COM");
    }

    #[test]
    fn rejects_what_is_not_a_keytab() {
        assert!(parse(b"hello").unwrap_err().contains("magic"));
        assert!(parse(&[0x05, 0x01]).unwrap_err().contains("version 1"));
        let mut kt = vec![0x05, 0x02];
        kt.extend(100u32.to_be_bytes());
        kt.extend([0u8; 10]);
        assert!(parse(&kt).unwrap_err().contains("truncated"));
        let mut kt = vec![0x05, 0x02];
        kt.extend(entry(&["HTTP", "x"], "R", 1, 18));
        kt.truncate(kt.len() - 30);
        assert!(parse(&kt).is_err());
    }

    #[test]
    fn empty_or_missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.keytab");
        std::fs::write(&p, [0x05, 0x02]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("holds no keys") && e.contains("empty.keytab"),
            "{e}"
        );
        let e = read(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("cannot be read") && e.contains("nope"), "{e}");
    }
}
