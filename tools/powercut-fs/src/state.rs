//! The filesystem's state: inodes with a latest and a durable view, and the
//! operations on them. No FUSE here, so the model can be tested directly.
//!
//! # Model
//!
//! - A regular file has latest content and durable content
//!   ([`FileData`]). `fsync`/`fdatasync` make the latest content, its size
//!   and its mode/owner durable.
//! - A directory has latest entries and durable entries (name → inode).
//!   `fsync` on the directory makes its latest entries durable: creations,
//!   unlinks, renames into and out of it, `mkdir`, `rmdir`, `mknod`,
//!   `symlink`, `link`.
//! - The backing directory always holds the durable state reachable from
//!   the root: durable entries of durable directories, with durable content.
//!   A file synced before it has a durable name keeps its durable content in
//!   memory until a directory fsync gives it one.
//! - A cut makes every latest view equal to the durable one, closes every
//!   handle, and forgets inodes that no longer have a name.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use crate::data::{Durable, FileData};
use crate::sys;

pub(crate) const ROOT: u64 = 1;
/// Inode of the control file `/.powercut-ctl`.
pub(crate) const CTL_INO: u64 = 2;
pub(crate) const CTL_NAME: &str = ".powercut-ctl";
const FIRST_INO: u64 = 16;

pub(crate) type Result<T> = std::result::Result<T, Errno>;

fn io_err(e: io::Error) -> Errno {
    Errno::from(e)
}

/// Options of a mount.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Torn mode: at a cut, each file keeps a random prefix of its unsynced
    /// writes and truncations (in the order they were made), chosen with
    /// this seed, instead of losing them all. Directory changes are still
    /// all dropped.
    pub torn_seed: Option<u64>,
}

/// What a cut dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose unsynced content, size or mode was dropped.
    pub files_dropped: usize,
    /// Directories whose unsynced entry changes were dropped.
    pub dirs_dropped: usize,
    /// Bytes in the dropped pages (4 KiB per page written since the file's
    /// last sync).
    pub bytes_dropped: u64,
    /// Torn mode only: unsynced writes and truncations that were kept.
    pub torn_ops_kept: usize,
}

/// Counters since the mount started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `write` requests.
    pub writes: u64,
    /// `fsync`/`fdatasync` on files.
    pub file_syncs: u64,
    /// `fsync` on directories.
    pub dir_syncs: u64,
    /// Cuts.
    pub cuts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    perm: u16,
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
pub(crate) struct DirData {
    /// Entries read from the backing directory yet (done on first use).
    loaded: bool,
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    /// The backing directory, once this directory is durable (reachable
    /// through durable entries from the root).
    backing: Option<OwnedFd>,
    /// Latest parent, for `..`.
    parent: u64,
}

#[derive(Debug)]
pub(crate) enum Kind {
    File(FileData),
    Dir(DirData),
    Symlink(OsString),
    /// FIFO or socket (device nodes are refused).
    Special(FileType, u32),
}

#[derive(Debug)]
pub(crate) struct Node {
    kind: Kind,
    meta: Meta,
    durable_meta: Meta,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Kernel references (lookup count).
    lookups: u64,
    /// Open handles.
    opens: u32,
    /// Latest names.
    links: u32,
    /// Durable names.
    durable_links: u32,
}

impl Node {
    fn new(kind: Kind, meta: Meta, time: SystemTime) -> Node {
        Node {
            kind,
            meta,
            durable_meta: meta,
            atime: time,
            mtime: time,
            ctime: time,
            lookups: 0,
            opens: 0,
            links: 0,
            durable_links: 0,
        }
    }

    fn file_type(&self) -> FileType {
        match &self.kind {
            Kind::File(_) => FileType::RegularFile,
            Kind::Dir(_) => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::Special(t, _) => *t,
        }
    }

    fn dir(&self) -> Result<&DirData> {
        match &self.kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self) -> Result<&mut DirData> {
        match &mut self.kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self) -> Result<&mut FileData> {
        match &mut self.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    append: bool,
    /// Directory handles: the listing at `opendir`.
    listing: Option<Vec<(u64, FileType, OsString)>>,
}

/// One directory entry as returned by `readdir`.
pub(crate) struct DirEntry {
    pub(crate) ino: u64,
    pub(crate) offset: u64,
    pub(crate) kind: FileType,
    pub(crate) name: OsString,
}

pub(crate) struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Backing (device, inode) → node, so hard links in the backing
    /// directory load as one node.
    by_backing: HashMap<(u64, u64), u64>,
    rng: Option<u64>,
    stats: Stats,
    root_fd: OwnedFd,
    tmp_counter: u64,
}

fn meta_of(st: &libc::stat) -> Meta {
    Meta {
        perm: (st.st_mode & 0o7777) as u16,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

fn time_of(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

fn type_of(mode: u32) -> Option<FileType> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Some(FileType::RegularFile),
        libc::S_IFDIR => Some(FileType::Directory),
        libc::S_IFLNK => Some(FileType::Symlink),
        libc::S_IFIFO => Some(FileType::NamedPipe),
        libc::S_IFSOCK => Some(FileType::Socket),
        libc::S_IFCHR => Some(FileType::CharDevice),
        libc::S_IFBLK => Some(FileType::BlockDevice),
        _ => None,
    }
}

fn type_bits(t: FileType) -> u32 {
    match t {
        FileType::RegularFile => libc::S_IFREG,
        FileType::Directory => libc::S_IFDIR,
        FileType::Symlink => libc::S_IFLNK,
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::Socket => libc::S_IFSOCK,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
    }
}

/// A bounded xorshift generator for torn mode.
fn next_random(state: &mut u64) -> u64 {
    // splitmix64
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl State {
    pub(crate) fn new(backing: &Path, options: &Options) -> io::Result<State> {
        let root_fd = sys::open_dir(backing)?;
        let st = sys::fstat(root_fd.as_fd())?;
        let dup = root_fd.try_clone()?;
        let mut root = Node::new(
            Kind::Dir(DirData {
                loaded: false,
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                backing: Some(dup),
                parent: ROOT,
            }),
            meta_of(&st),
            time_of(st.st_mtime, st.st_mtime_nsec),
        );
        root.links = 1;
        root.durable_links = 1;
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, root);
        Ok(State {
            nodes,
            next_ino: FIRST_INO,
            handles: HashMap::new(),
            next_fh: 1,
            by_backing: HashMap::new(),
            rng: options.torn_seed,
            stats: Stats::default(),
            root_fd,
            tmp_counter: 0,
        })
    }

    fn node(&self, ino: u64) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn alloc_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    // ----- loading from the backing directory -----

    /// Reads a durable directory's entries from the backing directory the
    /// first time they are needed.
    fn ensure_loaded(&mut self, dir: u64) -> Result<()> {
        let node = self.node(dir)?;
        let d = node.dir()?;
        if d.loaded {
            return Ok(());
        }
        let Some(fd) = d.backing.as_ref() else {
            // Directories created here start loaded; this cannot happen.
            return Err(Errno::EIO);
        };
        let fd = fd.try_clone().map_err(io_err)?;
        let names = sys::list_dir(fd.as_fd()).map_err(io_err)?;
        let torn = self.rng.is_some();
        let mut loaded = BTreeMap::new();
        for name in names {
            if dir == ROOT && name == CTL_NAME {
                continue;
            }
            let st = match sys::stat_at(fd.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(io_err(e)),
            };
            let Some(ftype) = type_of(st.st_mode) else {
                continue;
            };
            let key = (st.st_dev, st.st_ino);
            if ftype == FileType::RegularFile {
                if let Some(&ino) = self.by_backing.get(&key) {
                    if let Some(node) = self.nodes.get_mut(&ino) {
                        node.links += 1;
                        node.durable_links += 1;
                        loaded.insert(name, ino);
                        continue;
                    }
                }
            }
            let kind = match ftype {
                FileType::RegularFile => {
                    let f = sys::open_file_at(fd.as_fd(), &name).map_err(io_err)?;
                    Kind::File(FileData::new(Durable::Backing(f), st.st_size as u64, torn))
                }
                FileType::Directory => {
                    let sub = sys::open_dir_at(fd.as_fd(), &name).map_err(io_err)?;
                    Kind::Dir(DirData {
                        loaded: false,
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                        backing: Some(sub),
                        parent: dir,
                    })
                }
                FileType::Symlink => {
                    Kind::Symlink(sys::readlink_at(fd.as_fd(), &name).map_err(io_err)?)
                }
                other => Kind::Special(other, st.st_rdev as u32),
            };
            let ino = self.alloc_ino();
            let mut node = Node::new(kind, meta_of(&st), time_of(st.st_mtime, st.st_mtime_nsec));
            node.atime = time_of(st.st_atime, st.st_atime_nsec);
            node.ctime = time_of(st.st_ctime, st.st_ctime_nsec);
            node.links = 1;
            node.durable_links = 1;
            self.nodes.insert(ino, node);
            if ftype == FileType::RegularFile && st.st_nlink > 1 {
                self.by_backing.insert(key, ino);
            }
            loaded.insert(name, ino);
        }
        let d = self.node_mut(dir)?.dir_mut()?;
        d.entries = loaded.clone();
        d.durable = loaded;
        d.loaded = true;
        Ok(())
    }

    // ----- attributes -----

    pub(crate) fn attr(&self, ino: u64) -> Result<FileAttr> {
        if ino == CTL_INO {
            let now = SystemTime::now();
            return Ok(FileAttr {
                ino: INodeNo(CTL_INO),
                size: 0,
                blocks: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                kind: FileType::RegularFile,
                perm: 0o600,
                nlink: 1,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            });
        }
        let node = self.node(ino)?;
        let (size, nlink, rdev) = match &node.kind {
            Kind::File(f) => (f.size, node.links, 0),
            Kind::Dir(d) => {
                let subdirs = d
                    .entries
                    .values()
                    .filter(|c| {
                        self.nodes
                            .get(c)
                            .is_some_and(|n| matches!(n.kind, Kind::Dir(_)))
                    })
                    .count() as u32;
                (4096, if node.links > 0 { 2 + subdirs } else { 0 }, 0)
            }
            Kind::Symlink(t) => (t.len() as u64, node.links, 0),
            Kind::Special(_, rdev) => (0, node.links, *rdev),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind: node.file_type(),
            perm: node.meta.perm,
            nlink,
            uid: node.meta.uid,
            gid: node.meta.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        })
    }

    pub(crate) fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr> {
        if parent == ROOT && name == CTL_NAME {
            return self.attr(CTL_INO);
        }
        self.ensure_loaded(parent)?;
        let ino = *self
            .node(parent)?
            .dir()?
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let attr = self.attr(ino)?;
        self.node_mut(ino)?.lookups += 1;
        Ok(attr)
    }

    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            self.maybe_drop(ino);
        }
    }

    /// Forgets a node nobody can reach any more.
    fn maybe_drop(&mut self, ino: u64) {
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            if ino == ROOT {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            if node.lookups > 0 || node.opens > 0 || node.links > 0 || node.durable_links > 0 {
                continue;
            }
            let node = self.nodes.remove(&ino).expect("node present");
            self.by_backing.retain(|_, v| *v != ino);
            if let Kind::Dir(d) = node.kind {
                for child in d.entries.values() {
                    if let Some(c) = self.nodes.get_mut(child) {
                        c.links = c.links.saturating_sub(1);
                    }
                    stack.push(*child);
                }
                for child in d.durable.values() {
                    if let Some(c) = self.nodes.get_mut(child) {
                        c.durable_links = c.durable_links.saturating_sub(1);
                    }
                    stack.push(*child);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
        fh: Option<u64>,
    ) -> Result<FileAttr> {
        if ino == CTL_INO {
            return self.attr(ino);
        }
        if let Some(fh) = fh {
            self.handle(ino, fh)?;
        }
        let now = SystemTime::now();
        let node = self.node_mut(ino)?;
        if let Some(size) = size {
            node.file_mut()?.set_len(size).map_err(io_err)?;
            node.mtime = now;
        }
        if let Some(mode) = mode {
            node.meta.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            node.meta.uid = uid;
        }
        if let Some(gid) = gid {
            node.meta.gid = gid;
        }
        if let Some(t) = atime {
            node.atime = t;
        }
        if let Some(t) = mtime {
            node.mtime = t;
        }
        node.ctime = now;
        self.attr(ino)
    }

    pub(crate) fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match &self.node(ino)?.kind {
            Kind::Symlink(t) => Ok(t.as_bytes().to_vec()),
            _ => Err(Errno::EINVAL),
        }
    }

    // ----- namespace -----

    /// Checks that `name` can be added to `parent`.
    fn check_new_name(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if parent == ROOT && name == CTL_NAME {
            return Err(Errno::EEXIST);
        }
        self.ensure_loaded(parent)?;
        let d = self.node(parent)?.dir()?;
        if self.node(parent)?.links == 0 {
            // The directory was removed.
            return Err(Errno::ENOENT);
        }
        if d.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }

    /// Adds a new node under `parent` and returns its attributes (counted as
    /// one kernel lookup).
    fn add_node(&mut self, parent: u64, name: &OsStr, kind: Kind, meta: Meta) -> Result<FileAttr> {
        let now = SystemTime::now();
        let ino = self.alloc_ino();
        let mut node = Node::new(kind, meta, now);
        node.links = 1;
        node.lookups = 1;
        self.nodes.insert(ino, node);
        let p = self.node_mut(parent)?;
        p.mtime = now;
        p.ctime = now;
        p.dir_mut()?.entries.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    fn new_file_kind(&self) -> Kind {
        Kind::File(FileData::new(Durable::Empty, 0, self.rng.is_some()))
    }

    pub(crate) fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64)> {
        self.check_new_name(parent, name)?;
        let meta = Meta {
            perm: (mode & 0o7777) as u16,
            uid,
            gid,
        };
        let kind = self.new_file_kind();
        let attr = self.add_node(parent, name, kind, meta)?;
        let fh = self.open(attr.ino.0, flags)?;
        Ok((attr, fh))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mknod(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        let kind = match type_of(mode) {
            Some(FileType::RegularFile) => self.new_file_kind(),
            Some(t @ (FileType::NamedPipe | FileType::Socket)) => Kind::Special(t, rdev),
            _ => return Err(Errno::EPERM),
        };
        self.check_new_name(parent, name)?;
        let meta = Meta {
            perm: (mode & 0o7777) as u16,
            uid,
            gid,
        };
        self.add_node(parent, name, kind, meta)
    }

    pub(crate) fn mkdir(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        self.check_new_name(parent, name)?;
        let meta = Meta {
            perm: (mode & 0o7777) as u16,
            uid,
            gid,
        };
        let kind = Kind::Dir(DirData {
            loaded: true,
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
            backing: None,
            parent,
        });
        self.add_node(parent, name, kind, meta)
    }

    pub(crate) fn symlink(
        &mut self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        self.check_new_name(parent, name)?;
        let meta = Meta {
            perm: 0o777,
            uid,
            gid,
        };
        self.add_node(parent, name, Kind::Symlink(target.to_owned()), meta)
    }

    pub(crate) fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Result<FileAttr> {
        if !matches!(self.node(ino)?.kind, Kind::File(_)) {
            return Err(Errno::EPERM);
        }
        self.check_new_name(parent, name)?;
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.mtime = now;
        p.ctime = now;
        p.dir_mut()?.entries.insert(name.to_owned(), ino);
        let node = self.node_mut(ino)?;
        node.links += 1;
        node.lookups += 1;
        node.ctime = now;
        self.attr(ino)
    }

    /// Removes the entry `name` from `parent` (latest view only).
    fn remove_entry(&mut self, parent: u64, name: &OsStr) -> Result<u64> {
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.mtime = now;
        p.ctime = now;
        let ino = p.dir_mut()?.entries.remove(name).ok_or(Errno::ENOENT)?;
        let node = self.node_mut(ino)?;
        node.links = node.links.saturating_sub(1);
        node.ctime = now;
        Ok(ino)
    }

    pub(crate) fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        if parent == ROOT && name == CTL_NAME {
            return Err(Errno::EPERM);
        }
        self.ensure_loaded(parent)?;
        let ino = *self
            .node(parent)?
            .dir()?
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        if matches!(self.node(ino)?.kind, Kind::Dir(_)) {
            return Err(Errno::EISDIR);
        }
        let ino = self.remove_entry(parent, name)?;
        self.maybe_drop(ino);
        Ok(())
    }

    fn is_empty_dir(&mut self, ino: u64) -> Result<bool> {
        self.ensure_loaded(ino)?;
        Ok(self.node(ino)?.dir()?.entries.is_empty())
    }

    pub(crate) fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        self.ensure_loaded(parent)?;
        let ino = *self
            .node(parent)?
            .dir()?
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        if !matches!(self.node(ino)?.kind, Kind::Dir(_)) {
            return Err(Errno::ENOTDIR);
        }
        if !self.is_empty_dir(ino)? {
            return Err(Errno::ENOTEMPTY);
        }
        let ino = self.remove_entry(parent, name)?;
        self.maybe_drop(ino);
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        if (parent == ROOT && name == CTL_NAME) || (newparent == ROOT && newname == CTL_NAME) {
            return Err(Errno::EPERM);
        }
        if newname.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        self.ensure_loaded(parent)?;
        self.ensure_loaded(newparent)?;
        let src = *self
            .node(parent)?
            .dir()?
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let src_is_dir = matches!(self.node(src)?.kind, Kind::Dir(_));
        if src_is_dir && parent != newparent {
            // A directory would get a durable name in two directories at
            // once; see the README.
            return Err(Errno::EXDEV);
        }
        if let Some(&dst) = self.node(newparent)?.dir()?.entries.get(newname) {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                return Ok(());
            }
            let dst_is_dir = matches!(self.node(dst)?.kind, Kind::Dir(_));
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.is_empty_dir(dst)? => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            let dst = self.remove_entry(newparent, newname)?;
            self.maybe_drop(dst);
        }
        self.remove_entry(parent, name)?;
        let np = self.node_mut(newparent)?;
        np.dir_mut()?.entries.insert(newname.to_owned(), src);
        let node = self.node_mut(src)?;
        node.links += 1;
        Ok(())
    }

    // ----- handles and data -----

    pub(crate) fn open(&mut self, ino: u64, flags: i32) -> Result<u64> {
        let node = self.node_mut(ino)?;
        if let Kind::Dir(_) = node.kind {
            return Err(Errno::EISDIR);
        }
        if !matches!(node.kind, Kind::File(_)) {
            return Err(Errno::ENXIO);
        }
        node.opens += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                append: flags & libc::O_APPEND != 0,
                listing: None,
            },
        );
        Ok(fh)
    }

    pub(crate) fn release(&mut self, fh: u64) {
        if let Some(h) = self.handles.remove(&fh) {
            if let Some(node) = self.nodes.get_mut(&h.ino) {
                node.opens = node.opens.saturating_sub(1);
            }
            self.maybe_drop(h.ino);
        }
    }

    /// The handle's node, or `EIO` for a handle from before a cut.
    fn handle(&self, ino: u64, fh: u64) -> Result<&Handle> {
        match self.handles.get(&fh) {
            Some(h) if h.ino == ino => Ok(h),
            _ => Err(Errno::EIO),
        }
    }

    pub(crate) fn read(&mut self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.handle(ino, fh)?;
        let node = self.node_mut(ino)?;
        node.atime = SystemTime::now();
        node.file_mut()?.read(offset, size).map_err(io_err)
    }

    pub(crate) fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let append = self.handle(ino, fh)?.append;
        self.stats.writes += 1;
        let now = SystemTime::now();
        let node = self.node_mut(ino)?;
        node.mtime = now;
        node.ctime = now;
        let file = node.file_mut()?;
        let offset = if append { file.size } else { offset };
        file.write(offset, data).map_err(io_err)?;
        Ok(data.len() as u32)
    }

    pub(crate) fn fallocate(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        self.handle(ino, fh)?;
        let file = self.node_mut(ino)?.file_mut()?;
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > file.size {
            file.set_len(end).map_err(io_err)?;
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` on a file: content, size and mode/owner.
    pub(crate) fn fsync(&mut self, ino: u64, fh: u64) -> Result<()> {
        self.handle(ino, fh)?;
        self.stats.file_syncs += 1;
        self.sync_file(ino)
    }

    fn sync_file(&mut self, ino: u64) -> Result<()> {
        let node = self.node_mut(ino)?;
        let meta = node.meta;
        let meta_changed = node.durable_meta != meta;
        let file = node.file_mut()?;
        file.sync().map_err(io_err)?;
        if meta_changed {
            if let Durable::Backing(f) = &file.durable {
                sys::fchmod(f.as_fd(), u32::from(meta.perm)).map_err(io_err)?;
                sys::fchown(f.as_fd(), meta.uid, meta.gid).map_err(io_err)?;
            }
        }
        node.durable_meta = meta;
        Ok(())
    }

    // ----- directories -----

    pub(crate) fn opendir(&mut self, ino: u64) -> Result<u64> {
        self.ensure_loaded(ino)?;
        let node = self.node(ino)?;
        let d = node.dir()?;
        let mut listing = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (d.parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, &child) in &d.entries {
            let kind = self
                .nodes
                .get(&child)
                .map_or(FileType::RegularFile, Node::file_type);
            listing.push((child, kind, name.clone()));
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.node_mut(ino)?.opens += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                append: false,
                listing: Some(listing),
            },
        );
        Ok(fh)
    }

    pub(crate) fn readdir(&self, ino: u64, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let h = self.handle(ino, fh)?;
        let listing = h.listing.as_ref().ok_or(Errno::EBADF)?;
        Ok(listing
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| DirEntry {
                ino: *ino,
                offset: i as u64 + 1,
                kind: *kind,
                name: name.clone(),
            })
            .collect())
    }

    /// `fsync` on a directory: its entries become durable.
    pub(crate) fn fsyncdir(&mut self, ino: u64, fh: u64) -> Result<()> {
        self.handle(ino, fh)?;
        self.stats.dir_syncs += 1;
        self.sync_dir(ino)
    }

    fn sync_dir(&mut self, dir: u64) -> Result<()> {
        let node = self.node(dir)?;
        let d = node.dir()?;
        let meta = node.meta;
        if !d.loaded {
            return Ok(());
        }
        let removed: Vec<(OsString, u64)> = d
            .durable
            .iter()
            .filter(|(name, ino)| d.entries.get(*name) != Some(*ino))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let added: Vec<(OsString, u64)> = d
            .entries
            .iter()
            .filter(|(name, ino)| d.durable.get(*name) != Some(*ino))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let backing = match &d.backing {
            Some(fd) => Some(fd.try_clone().map_err(io_err)?),
            None => None,
        };
        let meta_changed = node.durable_meta != meta;
        if let Some(fd) = &backing {
            self.apply_entries(fd, &removed, &added)?;
            if meta_changed {
                sys::fchmod(fd.as_fd(), u32::from(meta.perm)).map_err(io_err)?;
                sys::fchown(fd.as_fd(), meta.uid, meta.gid).map_err(io_err)?;
            }
        }
        for (_, ino) in &added {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.durable_links += 1;
            }
        }
        for (_, ino) in &removed {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.durable_links = n.durable_links.saturating_sub(1);
            }
        }
        let node = self.node_mut(dir)?;
        node.durable_meta = meta;
        let d = node.dir_mut()?;
        d.durable = d.entries.clone();
        for (_, ino) in removed {
            self.maybe_drop(ino);
        }
        Ok(())
    }

    fn tmp_name(&mut self) -> OsString {
        self.tmp_counter += 1;
        OsString::from(format!(
            ".powercut-mv-{}-{}",
            std::process::id(),
            self.tmp_counter
        ))
    }

    /// Applies a durable directory's entry changes to its backing directory.
    fn apply_entries(
        &mut self,
        fd: &OwnedFd,
        removed: &[(OsString, u64)],
        added: &[(OsString, u64)],
    ) -> Result<()> {
        // A node both removed and added here was renamed inside this
        // directory: move its backing entry, so directories keep their
        // backing subtree and files their backing inode. Moves go through a
        // temporary name so chains and swaps cannot clobber each other.
        let mut moves: Vec<(OsString, OsString)> = Vec::new(); // tmp → final
        let mut moved_from: Vec<&OsStr> = Vec::new();
        let mut moved_to: Vec<&OsStr> = Vec::new();
        for (to, ino) in added {
            if let Some((from, _)) = removed
                .iter()
                .find(|(from, i)| i == ino && !moved_from.contains(&from.as_os_str()))
            {
                let tmp = self.tmp_name();
                sys::rename_at(fd.as_fd(), from, &tmp).map_err(io_err)?;
                moved_from.push(from);
                moved_to.push(to);
                moves.push((tmp, to.clone()));
            }
        }
        for (name, _) in removed {
            if !moved_from.contains(&name.as_os_str()) {
                sys::remove_tree_at(fd.as_fd(), name).map_err(io_err)?;
            }
        }
        for (tmp, to) in &moves {
            sys::rename_at(fd.as_fd(), tmp, to).map_err(io_err)?;
        }
        for (name, ino) in added {
            if !moved_to.contains(&name.as_os_str()) {
                self.materialize(fd, name, *ino)?;
            }
        }
        Ok(())
    }

    /// Creates the backing entry `name` in `dir` for `ino`, with its durable
    /// content (recursively for a directory: its durable entries).
    fn materialize(&mut self, dir: &OwnedFd, name: &OsStr, ino: u64) -> Result<()> {
        let node = self.node(ino)?;
        let meta = node.durable_meta;
        match &node.kind {
            Kind::File(f) => {
                if let Durable::Backing(file) = &f.durable {
                    let linked = sys::fstat(file.as_fd()).map_err(io_err)?.st_nlink > 0;
                    if linked {
                        // The inode has a durable name elsewhere too.
                        return sys::link_fd_at(file, dir.as_fd(), name).map_err(io_err);
                    }
                }
                let new =
                    sys::create_file_at(dir.as_fd(), name, u32::from(meta.perm)).map_err(io_err)?;
                f.copy_durable_to(&new).map_err(io_err)?;
                sys::fchmod(new.as_fd(), u32::from(meta.perm)).map_err(io_err)?;
                sys::fchown(new.as_fd(), meta.uid, meta.gid).map_err(io_err)?;
                let f = self.node_mut(ino)?.file_mut()?;
                f.durable = Durable::Backing(new);
            }
            Kind::Dir(d) => {
                let children: Vec<(OsString, u64)> =
                    d.durable.iter().map(|(n, i)| (n.clone(), *i)).collect();
                sys::mkdir_at(dir.as_fd(), name, u32::from(meta.perm)).map_err(io_err)?;
                let sub = sys::open_dir_at(dir.as_fd(), name).map_err(io_err)?;
                sys::fchmod(sub.as_fd(), u32::from(meta.perm)).map_err(io_err)?;
                sys::fchown(sub.as_fd(), meta.uid, meta.gid).map_err(io_err)?;
                for (child_name, child) in children {
                    self.materialize(&sub, &child_name, child)?;
                }
                self.node_mut(ino)?.dir_mut()?.backing = Some(sub);
            }
            Kind::Symlink(target) => {
                sys::symlink_at(dir.as_fd(), name, target).map_err(io_err)?;
                sys::lchown_at(dir.as_fd(), name, meta.uid, meta.gid).map_err(io_err)?;
            }
            Kind::Special(t, rdev) => {
                let mode = type_bits(*t) | u32::from(meta.perm);
                sys::mknod_at(dir.as_fd(), name, mode, u64::from(*rdev)).map_err(io_err)?;
                sys::lchown_at(dir.as_fd(), name, meta.uid, meta.gid).map_err(io_err)?;
            }
        }
        Ok(())
    }

    // ----- whole-filesystem operations -----

    /// Makes everything durable, like a clean shutdown (`sync`).
    pub(crate) fn sync_all(&mut self) -> Result<()> {
        let files: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File(_)))
            .map(|(i, _)| *i)
            .collect();
        for ino in files {
            self.sync_file(ino)?;
        }
        // Parents before children: a parent's sync gives a new child
        // directory its backing directory.
        let mut queue = std::collections::VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            self.sync_dir(dir)?;
            let d = self.node(dir)?.dir()?;
            for child in d.entries.values() {
                if self
                    .nodes
                    .get(child)
                    .is_some_and(|n| matches!(n.kind, Kind::Dir(_)))
                {
                    queue.push_back(*child);
                }
            }
        }
        Ok(())
    }

    /// Power cut: drops everything unsynced and every open handle. Returns
    /// what was dropped and the inodes whose kernel caches should go.
    pub(crate) fn cut(&mut self) -> Result<(CutReport, Vec<u64>)> {
        let mut report = CutReport::default();
        let mut rng = self.rng;
        let mut first_error = None;
        for node in self.nodes.values_mut() {
            let survives = node.durable_links > 0;
            let meta_changed = node.meta != node.durable_meta;
            match &mut node.kind {
                Kind::File(f) => {
                    if f.is_dirty() || meta_changed {
                        report.files_dropped += 1;
                        report.bytes_dropped += f.unsynced_bytes();
                    }
                    let keep = match (&mut rng, &f.log) {
                        (Some(state), Some(log)) if survives && !log.is_empty() => {
                            (next_random(state) % (log.len() as u64 + 1)) as usize
                        }
                        _ => 0,
                    };
                    report.torn_ops_kept += keep;
                    if let Err(e) = f.drop_unsynced(keep) {
                        first_error.get_or_insert(e);
                    }
                }
                Kind::Dir(d) if d.loaded && d.entries != d.durable => {
                    report.dirs_dropped += 1;
                    d.entries = d.durable.clone();
                }
                _ => {}
            }
            node.meta = node.durable_meta;
            node.links = node.durable_links;
            node.opens = 0;
        }
        self.rng = rng;
        self.handles.clear();
        // `..` of every directory follows its durable parent again.
        let mut parents = Vec::new();
        for (&ino, node) in &self.nodes {
            if let Kind::Dir(d) = &node.kind {
                for child in d.entries.values() {
                    parents.push((*child, ino));
                }
            }
        }
        for (child, parent) in parents {
            if let Some(Kind::Dir(d)) = self.nodes.get_mut(&child).map(|n| &mut n.kind) {
                d.parent = parent;
            }
        }
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for &ino in &inos {
            self.maybe_drop(ino);
        }
        self.stats.cuts += 1;
        if let Some(e) = first_error {
            return Err(io_err(e));
        }
        Ok((report, inos))
    }

    pub(crate) fn statfs(&self) -> Result<libc::statvfs> {
        sys::statvfs(self.root_fd.as_fd()).map_err(io_err)
    }
}
