//! A real, tiny file system (tmpfs) that a test can fill to the last page and free again, for the
//! gateway's behaviour on a full disk. Mounting needs root, which the tests have.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh directory; unmounted (and the directory removed) on drop.
pub struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `"256k"`).
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (the disk-full tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { _dir: dir, mount }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    fn filler(&self) -> PathBuf {
        self.mount.join(".fill")
    }

    /// Writes until the file system refuses (`ENOSPC`), then checks that not one more byte fits
    /// in a new file.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("open the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", self.mount.display()),
            }
        }
        drop(f);
        let probe = self.mount.join(".probe");
        let r = std::fs::write(&probe, b"x");
        let _ = std::fs::remove_file(&probe);
        let e = r.expect_err("the disk is full");
        assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    }

    /// Removes what [`SmallDisk::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // A process of the test (a gateway being killed) may still hold a file there: detach
            // the mount now, the kernel frees it when the last file closes.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}
