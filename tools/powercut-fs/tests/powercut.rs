//! powercut-fs through a real FUSE mount. These tests need root and
//! /dev/fuse; without them they fail with the reason, they do not skip.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use powercut_fs::{CONTROL_FILE, Mount, Options};

struct Fixture {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
    mount: Option<Mount>,
    options: Options,
}

fn start(backing: &Path, mnt: &Path, options: &Options) -> Mount {
    Mount::start_with(backing, mnt, options.clone()).unwrap_or_else(|e| panic!("{e}"))
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_options(Options::default())
    }

    fn with_options(options: Options) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mnt).unwrap();
        let mount = start(&backing, &mnt, &options);
        Fixture {
            _dir: dir,
            backing,
            mnt,
            mount: Some(mount),
            options,
        }
    }

    fn mount(&self) -> &Mount {
        self.mount.as_ref().expect("mounted")
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }

    fn cut(&self) -> powercut_fs::CutReport {
        self.mount().cut()
    }

    /// Unmounts and mounts again (the restart after a power cut).
    fn remount(&mut self) {
        self.mount
            .take()
            .expect("mounted")
            .unmount()
            .expect("unmount");
        self.mount = Some(start(&self.backing, &self.mnt, &self.options));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
    }
}

fn write_file(path: &Path, data: &[u8], sync: bool) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
}

fn fsync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn absent(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Err(e) => e.kind() == ErrorKind::NotFound,
        Ok(_) => false,
    }
}

/// Names in a directory, sorted, without the control file.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn unsynced_writes_are_lost_on_cut() {
    let fx = Fixture::new();
    write_file(&fx.p("f"), b"synced", true);
    fsync_dir(&fx.mnt);
    let mut f = OpenOptions::new().append(true).open(fx.p("f")).unwrap();
    f.write_all(b" and not").unwrap();
    drop(f);
    write_file(&fx.p("never-synced"), b"gone", false);
    assert_eq!(read(&fx.p("f")), b"synced and not");
    assert_eq!(read(&fx.p("never-synced")), b"gone");

    let report = fx.cut();
    assert_eq!(report.files_dropped, 2, "{report:?}");
    assert_eq!(report.dirs_dropped, 1, "{report:?}");
    assert_eq!(read(&fx.p("f")), b"synced");
    assert!(absent(&fx.p("never-synced")));
    assert_eq!(read(&fx.b("f")), b"synced");
    assert!(absent(&fx.b("never-synced")));
}

#[test]
fn synced_data_survives_cut_and_remount() {
    let mut fx = Fixture::new();
    let data = pattern(300_000, 7);
    write_file(&fx.p("big"), &data, true);
    fsync_dir(&fx.mnt);
    assert_eq!(fx.cut(), powercut_fs::CutReport::default());
    assert_eq!(read(&fx.p("big")), data);
    fx.remount();
    assert_eq!(read(&fx.b("big")), data);
    assert_eq!(read(&fx.p("big")), data);
}

#[test]
fn a_new_file_needs_an_fsync_of_its_directory() {
    let fx = Fixture::new();
    // File fsync only: the data is durable, the name is not.
    write_file(&fx.p("a"), b"data", true);
    fx.cut();
    assert!(absent(&fx.p("a")));
    assert!(absent(&fx.b("a")));

    // File and directory fsync: both durable.
    write_file(&fx.p("a"), b"data", true);
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(read(&fx.p("a")), b"data");

    // Directory fsync only: the name is durable, the data is not.
    write_file(&fx.p("b"), b"data", false);
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(read(&fx.p("b")), b"");
    assert_eq!(read(&fx.b("b")), b"");

    // The order does not matter: data synced before the directory.
    write_file(&fx.p("c"), b"early", true);
    write_file(&fx.p("d"), b"later", false);
    fsync_dir(&fx.mnt);
    File::options()
        .write(true)
        .open(fx.p("d"))
        .unwrap()
        .sync_all()
        .unwrap();
    fx.cut();
    assert_eq!(read(&fx.p("c")), b"early");
    assert_eq!(read(&fx.p("d")), b"later");
}

#[test]
fn rename_is_durable_after_the_directory_fsync() {
    let fx = Fixture::new();
    write_file(&fx.p("final"), b"old", true);
    fsync_dir(&fx.mnt);

    // write tmp, fsync, rename over: without the directory fsync the cut
    // brings back the old file and no tmp.
    write_file(&fx.p("tmp"), b"new", true);
    fs::rename(fx.p("tmp"), fx.p("final")).unwrap();
    assert_eq!(read(&fx.p("final")), b"new");
    fx.cut();
    assert_eq!(read(&fx.p("final")), b"old");
    assert!(absent(&fx.p("tmp")));

    write_file(&fx.p("tmp"), b"new", true);
    fs::rename(fx.p("tmp"), fx.p("final")).unwrap();
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(read(&fx.p("final")), b"new");
    assert!(absent(&fx.p("tmp")));
    assert_eq!(names(&fx.backing), ["final"]);

    // A chain of renames inside one directory: a→b, b→c, c→a.
    write_file(&fx.p("a"), b"A", true);
    write_file(&fx.p("b"), b"B", true);
    write_file(&fx.p("c"), b"C", true);
    fsync_dir(&fx.mnt);
    fs::rename(fx.p("a"), fx.p("t")).unwrap();
    fs::rename(fx.p("c"), fx.p("a")).unwrap();
    fs::rename(fx.p("b"), fx.p("c")).unwrap();
    fs::rename(fx.p("t"), fx.p("b")).unwrap();
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(read(&fx.p("a")), b"C");
    assert_eq!(read(&fx.p("b")), b"A");
    assert_eq!(read(&fx.p("c")), b"B");
    assert_eq!(names(&fx.backing), ["a", "b", "c", "final"]);
}

#[test]
fn a_rename_across_directories_follows_each_directory_fsync() {
    let fx = Fixture::new();
    fs::create_dir(fx.p("a")).unwrap();
    fs::create_dir(fx.p("b")).unwrap();
    fsync_dir(&fx.mnt);
    write_file(&fx.p("a/x"), b"x", true);
    fsync_dir(&fx.p("a"));

    // Only the destination synced: the file has both names after the cut.
    fs::rename(fx.p("a/x"), fx.p("b/y")).unwrap();
    fsync_dir(&fx.p("b"));
    fx.cut();
    assert_eq!(read(&fx.p("a/x")), b"x");
    assert_eq!(read(&fx.p("b/y")), b"x");
    let (ax, by) = (
        fs::metadata(fx.b("a/x")).unwrap(),
        fs::metadata(fx.b("b/y")).unwrap(),
    );
    assert_eq!(
        ax.ino(),
        by.ino(),
        "one inode with two names in the backing directory"
    );

    // Remove b/y for good, then sync only the source of a new rename: the
    // file has no name after the cut.
    fs::remove_file(fx.p("b/y")).unwrap();
    fsync_dir(&fx.p("b"));
    fs::rename(fx.p("a/x"), fx.p("b/y")).unwrap();
    fsync_dir(&fx.p("a"));
    fx.cut();
    assert!(absent(&fx.p("a/x")));
    assert!(absent(&fx.p("b/y")));

    // Both synced, source first: the file moved (its content was copied
    // out of the unlinked backing inode).
    write_file(&fx.p("a/x"), b"moved", true);
    fsync_dir(&fx.p("a"));
    fs::rename(fx.p("a/x"), fx.p("b/y")).unwrap();
    fsync_dir(&fx.p("a"));
    fsync_dir(&fx.p("b"));
    fx.cut();
    assert!(absent(&fx.p("a/x")));
    assert_eq!(read(&fx.p("b/y")), b"moved");
    assert_eq!(read(&fx.b("b/y")), b"moved");

    // Directories cannot move to another parent.
    fs::create_dir(fx.p("a/d")).unwrap();
    let err = fs::rename(fx.p("a/d"), fx.p("b/d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
}

#[test]
fn truncation_is_unsynced_until_fsync() {
    let fx = Fixture::new();
    write_file(&fx.p("f"), &[b'x'; 10_000], true);
    fsync_dir(&fx.mnt);

    let expected: Vec<u8> = [vec![b'x'; 100], vec![0; 4900], b"y".to_vec()].concat();
    let shrink_and_write = || {
        let f = OpenOptions::new().write(true).open(fx.p("f")).unwrap();
        f.set_len(100).unwrap();
        f.write_all_at(b"y", 5000).unwrap();
        f
    };
    let f = shrink_and_write();
    drop(f);
    assert_eq!(read(&fx.p("f")), expected);
    fx.cut();
    assert_eq!(read(&fx.p("f")), vec![b'x'; 10_000]);

    let f = shrink_and_write();
    f.sync_data().unwrap();
    drop(f);
    fx.cut();
    assert_eq!(read(&fx.p("f")), expected);
    assert_eq!(read(&fx.b("f")), expected);

    // Extension by set_len reads zeros and is durable only after fsync.
    let f = OpenOptions::new().write(true).open(fx.p("f")).unwrap();
    f.set_len(8000).unwrap();
    assert_eq!(fs::metadata(fx.p("f")).unwrap().len(), 8000);
    drop(f);
    fx.cut();
    assert_eq!(fs::metadata(fx.p("f")).unwrap().len(), 5001);
}

#[test]
fn unlink_is_undone_by_a_cut_unless_the_directory_was_synced() {
    let fx = Fixture::new();
    write_file(&fx.p("f"), b"keep", true);
    fsync_dir(&fx.mnt);
    fs::remove_file(fx.p("f")).unwrap();
    assert!(absent(&fx.p("f")));
    fx.cut();
    assert_eq!(read(&fx.p("f")), b"keep");

    fs::remove_file(fx.p("f")).unwrap();
    fsync_dir(&fx.mnt);
    assert!(absent(&fx.b("f")));
    fx.cut();
    assert!(absent(&fx.p("f")));
}

#[test]
fn directories_need_their_parent_synced() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.p("a/b")).unwrap();
    write_file(&fx.p("a/b/f"), b"deep", true);
    fsync_dir(&fx.p("a/b"));
    fsync_dir(&fx.p("a"));
    // The root was not synced: nothing of a/ survives.
    fx.cut();
    assert!(absent(&fx.p("a")));
    assert!(absent(&fx.b("a")));

    fs::create_dir_all(fx.p("a/b")).unwrap();
    write_file(&fx.p("a/b/f"), b"deep", true);
    fsync_dir(&fx.p("a/b"));
    fsync_dir(&fx.p("a"));
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(read(&fx.p("a/b/f")), b"deep");
    assert_eq!(read(&fx.b("a/b/f")), b"deep");

    // rmdir is a change of the parent too.
    fs::remove_file(fx.p("a/b/f")).unwrap();
    fs::remove_dir(fx.p("a/b")).unwrap();
    fx.cut();
    assert_eq!(read(&fx.p("a/b/f")), b"deep");
    fs::remove_file(fx.p("a/b/f")).unwrap();
    fs::remove_dir(fx.p("a/b")).unwrap();
    fsync_dir(&fx.p("a"));
    fx.cut();
    assert!(absent(&fx.p("a/b")));
    assert!(absent(&fx.b("a/b")));
    assert_eq!(names(&fx.p("a")), Vec::<String>::new());
}

#[test]
fn many_files_keep_exactly_what_was_synced() {
    let mut fx = Fixture::new();
    fs::create_dir(fx.p("d")).unwrap();
    fsync_dir(&fx.mnt);
    const N: usize = 300;
    for i in 0..N {
        write_file(
            &fx.p(&format!("d/f{i:03}")),
            &pattern(1000 + i, i as u8),
            i % 2 == 0,
        );
    }
    fsync_dir(&fx.p("d"));
    // Created after the directory fsync: gone after the cut.
    for i in 0..50 {
        write_file(&fx.p(&format!("d/late{i:02}")), b"late", true);
    }
    assert_eq!(names(&fx.p("d")).len(), N + 50);
    let (report, mount) = fx.mount.take().unwrap().power_cycle().unwrap();
    fx.mount = Some(mount);
    assert_eq!(report.files_dropped, N / 2, "{report:?}");
    for dir in [fx.p("d"), fx.b("d")] {
        assert_eq!(names(&dir).len(), N, "{}", dir.display());
        for i in 0..N {
            let got = read(&dir.join(format!("f{i:03}")));
            if i % 2 == 0 {
                assert_eq!(got, pattern(1000 + i, i as u8), "f{i:03}");
            } else {
                assert!(got.is_empty(), "f{i:03} has {} bytes", got.len());
            }
        }
    }
}

#[test]
fn reads_see_the_latest_writes_and_a_cut_the_synced_ones() {
    let fx = Fixture::new();
    let path = fx.p("f");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    fsync_dir(&fx.mnt);
    let mut latest: Vec<u8> = Vec::new();
    let mut durable: Vec<u8> = Vec::new();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for step in 0..400u64 {
        match next(10) {
            0 => {
                f.sync_data().unwrap();
                durable = latest.clone();
            }
            1 => {
                let len = next(40_000) as usize;
                f.set_len(len as u64).unwrap();
                latest.resize(len, 0);
            }
            _ => {
                let off = next(40_000) as usize;
                let data = pattern(next(10_000) as usize + 1, step as u8);
                f.write_all_at(&data, off as u64).unwrap();
                if latest.len() < off + data.len() {
                    latest.resize(off + data.len(), 0);
                }
                latest[off..off + data.len()].copy_from_slice(&data);
            }
        }
        let mut got = vec![0u8; latest.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == latest, "step {step}: content differs");
    }
    drop(f);
    fx.cut();
    assert!(
        read(&path) == durable,
        "after the cut: not the synced content"
    );
}

#[test]
fn the_control_file_cuts_and_syncs() {
    let fx = Fixture::new();
    let ctl = fx.p(CONTROL_FILE);
    assert!(
        !names(&fx.mnt).contains(&CONTROL_FILE.to_string()),
        "not listed"
    );

    write_file(&fx.p("f"), b"unsynced", false);
    fs::write(&ctl, "sync\n").unwrap();
    write_file(&fx.p("g"), b"unsynced", false);
    fs::write(&ctl, "cut\n").unwrap();
    assert_eq!(read(&fx.p("f")), b"unsynced");
    assert!(absent(&fx.p("g")));
    assert_eq!(fx.mount().stats().cuts, 1);

    let status = String::from_utf8(read(&ctl)).unwrap();
    assert!(status.contains("cuts 1"), "{status}");
    let err = fs::write(&ctl, "explode\n").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    assert!(fs::remove_file(&ctl).is_err());
}

#[test]
fn sync_all_makes_everything_durable() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.p("a/b")).unwrap();
    write_file(&fx.p("a/b/f"), b"one", false);
    write_file(&fx.p("top"), b"two", false);
    fx.mount().sync_all().unwrap();
    assert_eq!(fx.cut(), powercut_fs::CutReport::default());
    assert_eq!(read(&fx.p("a/b/f")), b"one");
    assert_eq!(read(&fx.b("a/b/f")), b"one");
    assert_eq!(read(&fx.b("top")), b"two");
}

#[test]
fn handles_from_before_a_cut_fail() {
    let fx = Fixture::new();
    write_file(&fx.p("f"), b"base", true);
    fsync_dir(&fx.mnt);
    let mut f = OpenOptions::new().write(true).open(fx.p("f")).unwrap();
    f.write_all(b"BA").unwrap();
    fx.cut();
    let err = f.write_all(b"SE").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    drop(f);
    assert_eq!(read(&fx.p("f")), b"base");
}

#[test]
fn unmount_drops_what_is_unsynced() {
    let mut fx = Fixture::new();
    write_file(&fx.p("kept"), b"k", true);
    fsync_dir(&fx.mnt);
    write_file(&fx.p("lost"), b"l", false);
    let mut f = OpenOptions::new().append(true).open(fx.p("kept")).unwrap();
    f.write_all(b"+unsynced").unwrap();
    drop(f);
    fx.remount();
    assert_eq!(names(&fx.backing), ["kept"]);
    assert_eq!(read(&fx.p("kept")), b"k");
    assert!(absent(&fx.p("lost")));
}

#[test]
fn torn_mode_keeps_a_prefix_of_the_unsynced_writes() {
    let mut kept = Vec::new();
    for seed in 1..=6u64 {
        let fx = Fixture::with_options(Options {
            torn_seed: Some(seed),
        });
        write_file(&fx.p("log"), b"HEAD", true);
        fsync_dir(&fx.mnt);
        let mut f = OpenOptions::new().append(true).open(fx.p("log")).unwrap();
        let records: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("rec{i:04}|").into_bytes())
            .collect();
        for r in &records {
            f.write_all(r).unwrap();
        }
        drop(f);
        let report = fx.cut();
        let got = read(&fx.p("log"));
        let full: Vec<u8> = [b"HEAD".to_vec(), records.concat()].concat();
        assert!(full.starts_with(&got), "seed {seed}: not a prefix");
        assert_eq!((got.len() - 4) % 8, 0, "seed {seed}: a torn record");
        assert_eq!((got.len() - 4) / 8, report.torn_ops_kept, "seed {seed}");
        assert_eq!(read(&fx.b("log")), got);
        kept.push(report.torn_ops_kept);
    }
    assert!(
        kept.iter().any(|&k| k > 0 && k < 50),
        "no seed kept a strict prefix: {kept:?}"
    );
}

#[test]
fn flock_locks_are_exclusive() {
    let fx = Fixture::new();
    write_file(&fx.p("lock"), b"", false);
    let a = File::open(fx.p("lock")).unwrap();
    let b = File::open(fx.p("lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: valid descriptors.
    unsafe {
        assert_eq!(libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
        assert_eq!(
            libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
            -1
        );
    }
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EWOULDBLOCK)
    );
}

#[test]
fn a_unix_socket_can_live_in_the_mount() {
    let fx = Fixture::new();
    let path = fx.p("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"ping").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    fsync_dir(&fx.mnt);
    assert!(
        fs::symlink_metadata(fx.b("control.sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
}

#[test]
fn symlinks_and_hard_links_follow_the_directory_fsync() {
    let fx = Fixture::new();
    write_file(&fx.p("f"), b"target", true);
    std::os::unix::fs::symlink("f", fx.p("s")).unwrap();
    fs::hard_link(fx.p("f"), fx.p("h")).unwrap();
    assert_eq!(read(&fx.p("s")), b"target");
    assert_eq!(fs::metadata(fx.p("f")).unwrap().nlink(), 2);
    fx.cut();
    assert!(absent(&fx.p("s")) && absent(&fx.p("h")) && absent(&fx.p("f")));

    write_file(&fx.p("f"), b"target", true);
    std::os::unix::fs::symlink("f", fx.p("s")).unwrap();
    fs::hard_link(fx.p("f"), fx.p("h")).unwrap();
    fsync_dir(&fx.mnt);
    fx.cut();
    assert_eq!(fs::read_link(fx.p("s")).unwrap(), Path::new("f"));
    assert_eq!(fs::read_link(fx.b("s")).unwrap(), Path::new("f"));
    assert_eq!(
        fs::metadata(fx.b("f")).unwrap().ino(),
        fs::metadata(fx.b("h")).unwrap().ino()
    );
    assert_eq!(read(&fx.p("h")), b"target");
}

#[test]
fn mmap_writes_are_durable_after_msync() {
    let fx = Fixture::new();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.p("m"))
        .unwrap();
    f.set_len(8192).unwrap();
    f.sync_all().unwrap();
    fsync_dir(&fx.mnt);
    use std::os::fd::AsRawFd;
    // SAFETY: a shared mapping of an 8 KiB file, written within bounds,
    // synced and unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), p.cast::<u8>().add(4096), 6);
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, 8192), 0);
    }
    drop(f);
    fx.cut();
    let got = read(&fx.p("m"));
    assert_eq!(&got[4096..4102], b"mapped");
}

#[test]
fn o_sync_writes_are_durable_and_sync_file_range_is_not() {
    let fx = Fixture::new();
    write_file(&fx.p("osync"), b"", true);
    write_file(&fx.p("sfr"), b"", true);
    fsync_dir(&fx.mnt);
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(fx.p("osync"))
        .unwrap();
    f.write_all(b"synced by O_SYNC").unwrap();
    drop(f);

    let mut f = OpenOptions::new().write(true).open(fx.p("sfr")).unwrap();
    f.write_all(b"only sync_file_range").unwrap();
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid descriptor.
    assert_eq!(
        unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) },
        0
    );
    drop(f);

    fx.cut();
    assert_eq!(read(&fx.p("osync")), b"synced by O_SYNC");
    assert_eq!(read(&fx.p("sfr")), b"");
}

#[test]
fn concurrent_appenders_keep_every_acknowledged_record() {
    // T3 in miniature on plain files: writers append records and fsync every
    // few records ("acknowledge" them); after the cut each file holds every
    // acknowledged record, and only a prefix of what was written.
    let fx = Fixture::new();
    fs::create_dir(fx.p("logs")).unwrap();
    fsync_dir(&fx.mnt);
    for w in 0..4 {
        write_file(&fx.p(&format!("logs/w{w}")), b"", true);
    }
    fsync_dir(&fx.p("logs"));
    let acked: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let path = fx.p(&format!("logs/w{w}"));
                s.spawn(move || {
                    let mut f = OpenOptions::new().append(true).open(path).unwrap();
                    let mut acked = 0;
                    for i in 0..997usize {
                        f.write_all(format!("{w}:{i:06}\n").as_bytes()).unwrap();
                        if i % 10 == 9 {
                            f.sync_data().unwrap();
                            acked = i + 1;
                        }
                    }
                    acked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let report = fx.cut();
    assert_eq!(report.files_dropped, 4, "{report:?}");
    for (w, &acked) in acked.iter().enumerate() {
        let got = String::from_utf8(read(&fx.p(&format!("logs/w{w}")))).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), acked, "w{w}: exactly the acknowledged records");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("{w}:{i:06}"), "w{w} record {i}");
        }
    }
}

#[test]
fn held_syncs_wait_for_the_release_while_everything_else_is_served() {
    let fx = Fixture::new();
    write_file(&fx.p("other"), b"readable", true);
    write_file(&fx.p("held"), b"", true);
    fsync_dir(&fx.mnt);
    let mut f = OpenOptions::new().append(true).open(fx.p("held")).unwrap();
    f.write_all(b"data").unwrap();
    fx.mount().hold_syncs();
    let syncing = std::thread::spawn(move || f.sync_all());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.mount().syncs_waiting() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The sync waits; reads, writes and the control file are served.
    assert_eq!(read(&fx.p("other")), b"readable");
    write_file(&fx.p("more"), b"x", false);
    assert!(
        String::from_utf8(read(&fx.p(CONTROL_FILE)))
            .unwrap()
            .contains("syncs_waiting 1")
    );
    assert!(!syncing.is_finished());
    // Held: not durable yet. Released: the sync returns, and it counted.
    assert!(read(&fx.b("held")).is_empty());
    fs::write(fx.p(CONTROL_FILE), "release-syncs").unwrap();
    syncing.join().unwrap().unwrap();
    assert_eq!(fx.mount().syncs_waiting(), 0);
    assert_eq!(read(&fx.b("held")), b"data");
}
