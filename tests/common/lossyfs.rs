//! A filesystem that loses what was not synced when the power goes: an
//! in-process FUSE filesystem (the `fuser` crate, mounted with mount(2)
//! directly, without libfuse or fusermount, which needs root and
//! /dev/fuse) that keeps every file in memory, for the power-loss tests. A SIGKILL alone keeps the OS page cache, so a
//! crash test with real processes would pass with every fsync removed;
//! on this filesystem the page cache is ours to drop.
//!
//! Semantics, per mount:
//!
//! - A file's data is volatile until an fsync or fdatasync of that file:
//!   [`LossyMount::cut`] (the power cut) reverts every file to the
//!   contents it had at its last sync, and a file never synced becomes
//!   empty. Syncing one file makes no other file's data durable.
//! - The namespace (create, mkdir, rename, unlink, rmdir) is volatile too,
//!   until the next fsync of any file or directory, which commits all of
//!   it, as a journaling filesystem commits its metadata journal. A cut
//!   reverts it to that commit: a file created and never followed by any
//!   fsync is gone, a file renamed since is back under its old name.
//!   This is stricter than durable-at-once, so a program that forgets to
//!   sync a directory has a chance of being caught.
//! - After a cut every operation fails with EIO until
//!   [`LossyMount::remount`], which unmounts (the kernel's caches of the
//!   old mount go with it) and mounts the surviving state anew.
//!
//! File locks stay with the kernel (FUSE does them locally when the
//! filesystem does not), as do permission checks (none: the tests run as
//! root). Hard links, symlinks and special files are not supported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow,
};

/// An errno, as FUSE replies carry it.
type Errno = libc::c_int;

const ROOT: u64 = 1;
/// How long the kernel may cache names and attributes: every change goes
/// through the kernel, and a cut is followed by a fresh mount.
const TTL: Duration = Duration::from_secs(1);
/// No test file comes near this; a write past it is a bug, not data.
const MAX_FILE: usize = 1 << 30;

/// One file's data: what readers see now, and what a cut leaves.
#[derive(Default)]
struct Contents {
    live: Vec<u8>,
    synced: Vec<u8>,
    /// `live` and `synced` agree on every byte before this one (None: on
    /// all), so a sync copies only the tail written since the last one.
    dirty_from: Option<usize>,
}

impl Contents {
    fn touch(&mut self, from: usize) {
        let from = from.min(self.live.len());
        self.dirty_from = Some(self.dirty_from.map_or(from, |d| d.min(from)));
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        let end = offset.checked_add(data.len()).ok_or(libc::EFBIG)?;
        if end > MAX_FILE {
            return Err(libc::EFBIG);
        }
        self.touch(offset);
        if self.live.len() < end {
            self.live.resize(end, 0);
        }
        self.live[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&mut self, len: usize) -> Result<(), Errno> {
        if len > MAX_FILE {
            return Err(libc::EFBIG);
        }
        self.touch(len);
        self.live.resize(len, 0);
        Ok(())
    }

    /// Zeroes `[offset, offset + len)` within the file's size (a punched
    /// hole reads as zeros).
    fn zero(&mut self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.live.len());
        if offset < end {
            self.touch(offset);
            self.live[offset..end].fill(0);
        }
    }

    fn sync(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            self.synced.truncate(from);
            self.synced.extend_from_slice(&self.live[from..]);
        }
    }

    /// Back to the last synced contents; returns how many bytes written
    /// since were dropped (at most: the tail from the first change).
    fn revert(&mut self) -> usize {
        match self.dirty_from.take() {
            Some(from) => {
                let dropped = self.live.len() - from;
                self.live = self.synced.clone();
                dropped.max(1)
            }
            None => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

struct Node {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// Empty for a directory.
    contents: Contents,
}

/// Each directory's entries, by the directory's inode.
type Namespace = HashMap<u64, BTreeMap<OsString, u64>>;

/// What one cut threw away.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutReport {
    /// Files whose contents went back to an older sync.
    pub files_reverted: usize,
    /// Bytes written and not synced (counted from each file's first
    /// unsynced change).
    pub bytes_dropped: usize,
    /// True when names changed since the last commit were undone.
    pub namespace_reverted: bool,
}

/// The whole state of one lossy filesystem, kept across its mounts.
struct Disk {
    nodes: HashMap<u64, Node>,
    live_ns: Namespace,
    durable_ns: Namespace,
    /// True when `live_ns` changed since it was last committed.
    ns_dirty: bool,
    next_ino: u64,
    powered: bool,
    syncs: u64,
}

impl Disk {
    fn new(root: Node) -> Disk {
        let mut ns = Namespace::new();
        ns.insert(ROOT, BTreeMap::new());
        Disk {
            nodes: HashMap::from([(ROOT, root)]),
            live_ns: ns.clone(),
            durable_ns: ns,
            ns_dirty: false,
            next_ino: ROOT + 1,
            powered: true,
            syncs: 0,
        }
    }

    fn powered(&self) -> Result<(), Errno> {
        if self.powered {
            Ok(())
        } else {
            Err(libc::EIO)
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.powered()?;
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Contents, Errno> {
        self.powered()?;
        let node = self.nodes.get_mut(&ino).ok_or(libc::ENOENT)?;
        if node.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        node.mtime = SystemTime::now();
        Ok(&mut node.contents)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let size = node.contents.live.len() as u64;
        let (kind, nlink) = match node.kind {
            Kind::File => (FileType::RegularFile, 1),
            Kind::Dir => (FileType::Directory, 2),
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        self.powered()?;
        match self.live_ns.get(&dir) {
            Some(entries) => Ok(entries),
            None if self.nodes.contains_key(&dir) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn lookup(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// Adds a new node named `name` in `dir`.
    fn add(
        &mut self,
        dir: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
        req: &Request<'_>,
    ) -> Result<u64, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            kind,
            perm,
            uid: req.uid(),
            gid: req.gid(),
            mtime: SystemTime::now(),
            contents: Contents::default(),
        };
        self.nodes.insert(ino, node);
        if kind == Kind::Dir {
            self.live_ns.insert(ino, BTreeMap::new());
        }
        self.live_ns
            .entry(dir)
            .or_default()
            .insert(name.to_owned(), ino);
        self.ns_dirty = true;
        Ok(ino)
    }

    /// Removes the entry `name` from `dir`: a file, or an empty directory.
    fn remove(&mut self, dir: u64, name: &OsStr, kind: Kind) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        let is = self.nodes.get(&ino).map(|n| n.kind);
        match (kind, is) {
            (Kind::File, Some(Kind::Dir)) => return Err(libc::EISDIR),
            (Kind::Dir, Some(Kind::File)) => return Err(libc::ENOTDIR),
            (Kind::Dir, _) if self.live_ns.get(&ino).is_some_and(|e| !e.is_empty()) => {
                return Err(libc::ENOTEMPTY)
            }
            _ => {}
        }
        if kind == Kind::Dir {
            self.live_ns.remove(&ino);
        }
        if let Some(entries) = self.live_ns.get_mut(&dir) {
            entries.remove(name);
        }
        self.ns_dirty = true;
        Ok(())
    }

    /// A plain rename (FUSE of this ABI sends no RENAME_NOREPLACE or
    /// RENAME_EXCHANGE).
    fn rename(&mut self, from: (u64, &OsStr), to: (u64, &OsStr)) -> Result<(), Errno> {
        let ino = self.lookup(from.0, from.1)?;
        self.entries(to.0)?;
        if let Ok(target) = self.lookup(to.0, to.1) {
            if target == ino {
                return Ok(());
            }
            let kind = self.nodes.get(&target).map_or(Kind::File, |n| n.kind);
            let moving = self.nodes.get(&ino).map_or(Kind::File, |n| n.kind);
            match (moving, kind) {
                (Kind::Dir, Kind::File) => return Err(libc::ENOTDIR),
                (Kind::File, Kind::Dir) => return Err(libc::EISDIR),
                _ => self.remove(to.0, to.1, kind)?,
            }
        }
        if let Some(entries) = self.live_ns.get_mut(&from.0) {
            entries.remove(from.1);
        }
        self.live_ns
            .entry(to.0)
            .or_default()
            .insert(to.1.to_owned(), ino);
        self.ns_dirty = true;
        Ok(())
    }

    /// An fsync: `ino`'s data (if a file) and the whole namespace become
    /// durable.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        self.powered()?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.contents.sync();
        }
        if self.ns_dirty {
            self.durable_ns = self.live_ns.clone();
            self.ns_dirty = false;
        }
        self.syncs += 1;
        Ok(())
    }

    /// The power cut: everything back to its last sync, the nodes no
    /// committed name reaches forgotten, and no more service until the
    /// next mount.
    fn cut(&mut self) -> CutReport {
        let mut report = CutReport {
            namespace_reverted: self.ns_dirty,
            ..CutReport::default()
        };
        self.live_ns = self.durable_ns.clone();
        self.ns_dirty = false;
        let mut reachable = HashSet::from([ROOT]);
        let mut dirs = vec![ROOT];
        while let Some(dir) = dirs.pop() {
            for ino in self
                .durable_ns
                .get(&dir)
                .into_iter()
                .flat_map(|e| e.values())
            {
                if reachable.insert(*ino) && self.durable_ns.contains_key(ino) {
                    dirs.push(*ino);
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        for node in self.nodes.values_mut() {
            let dropped = node.contents.revert();
            if dropped > 0 {
                report.files_reverted += 1;
                report.bytes_dropped += dropped;
            }
        }
        self.powered = false;
        report
    }
}

/// The FUSE side: each request locks the disk, does its part, replies.
struct LossyFs {
    disk: Arc<Mutex<Disk>>,
}

impl LossyFs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reply_entry(&self, found: Result<u64, Errno>, reply: ReplyEntry) {
        let disk = self.disk();
        match found.and_then(|ino| disk.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for LossyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let found = self.disk().lookup(parent, name);
        self.reply_entry(found, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyAttr) {
        match self.disk().attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let mut result = disk.node(ino).map(|_| ());
        if let (Ok(()), Some(size)) = (result, size) {
            let len = usize::try_from(size).map_err(|_| libc::EFBIG);
            result = len.and_then(|len| disk.file_mut(ino)?.set_len(len));
        }
        if let (Ok(()), Some(mode), Some(node)) = (result, mode, disk.nodes.get_mut(&ino)) {
            node.perm = perm(mode, 0);
        }
        match result.and_then(|()| disk.attr(ino)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self
            .disk()
            .add(parent, name, Kind::Dir, perm(mode, umask), req);
        self.reply_entry(made, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(self.disk().remove(parent, name, Kind::File), reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(self.disk().remove(parent, name, Kind::Dir), reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = if flags == 0 {
            self.disk().rename((parent, name), (newparent, newname))
        } else {
            Err(libc::EINVAL)
        };
        empty(result, reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.disk().node(ino) {
            Ok(_) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let disk = self.disk();
        match disk.node(ino) {
            Ok(node) => {
                let data = &node.contents.live;
                let start = usize::try_from(offset).unwrap_or(0).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        let offset = usize::try_from(offset).map_err(|_| libc::EINVAL);
        match offset.and_then(|offset| disk.file_mut(ino)?.write(offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        empty(self.disk().sync(ino), reply);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let disk = self.disk();
        let entries = match disk.entries(ino) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, FileType::Directory, OsStr::new(".")),
            (ino, FileType::Directory, OsStr::new("..")),
        ];
        let children = entries.iter().map(|(name, child)| {
            let kind = match disk.nodes.get(child).map(|n| n.kind) {
                Some(Kind::Dir) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (*child, kind, name.as_os_str())
        });
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, (child, kind, name)) in dots.into_iter().chain(children).enumerate().skip(skip) {
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.disk().sync(ino), reply);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        const BLOCKS: u64 = 1 << 20;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, BLOCKS, BLOCKS, 4096, 255, 4096);
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        let made = match disk.lookup(parent, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
            Ok(ino) if flags & libc::O_TRUNC != 0 => {
                disk.file_mut(ino).and_then(|c| c.set_len(0)).map(|()| ino)
            }
            Ok(ino) => Ok(ino),
            Err(_) => disk.add(parent, name, Kind::File, perm(mode, umask), req),
        };
        match made.and_then(|ino| disk.attr(ino)) {
            Ok(attr) => reply.created(&TTL, &attr, 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let range = usize::try_from(offset).and_then(|o| Ok((o, usize::try_from(length)?)));
        let result = range
            .map_err(|_| libc::EINVAL)
            .and_then(|(offset, length)| {
                let contents = disk.file_mut(ino)?;
                let end = offset.saturating_add(length);
                match mode {
                    // Plain preallocation grows the file; with KEEP_SIZE it
                    // changes nothing this filesystem keeps.
                    0 if end > contents.live.len() => contents.set_len(end),
                    0 | libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                    m if m == libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE => {
                        contents.zero(offset, length);
                        Ok(())
                    }
                    _ => Err(libc::EOPNOTSUPP),
                }
            });
        empty(result, reply);
    }
}

/// One lossy filesystem mounted at a directory; unmounted when dropped.
pub struct LossyMount {
    disk: Arc<Mutex<Disk>>,
    point: PathBuf,
    session: Option<BackgroundSession>,
}

impl LossyMount {
    /// Mounts a new, empty lossy filesystem on `point`, an existing
    /// directory. Fails when FUSE cannot be mounted here (no /dev/fuse,
    /// not root).
    pub fn mount(point: &Path) -> Result<LossyMount> {
        let meta =
            std::fs::metadata(point).with_context(|| format!("mount point {}", point.display()))?;
        let root = Node {
            kind: Kind::Dir,
            perm: (meta.mode() & 0o7777) as u16,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: SystemTime::now(),
            contents: Contents::default(),
        };
        let mut mount = LossyMount {
            disk: Arc::new(Mutex::new(Disk::new(root))),
            point: point.to_path_buf(),
            session: None,
        };
        mount.attach()?;
        Ok(mount)
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attach(&mut self) -> Result<()> {
        self.disk().powered = true;
        let options = [MountOption::FSName("lossyfs".into()), MountOption::RW];
        let fs = LossyFs {
            disk: self.disk.clone(),
        };
        let session = fuser::spawn_mount2(fs, &self.point, &options).map_err(|e| {
            anyhow!(
                "cannot mount the lossy FUSE filesystem at {}: {e} (the power-loss tests \
                 need /dev/fuse and root, to mount with mount(2))",
                self.point.display()
            )
        })?;
        self.session = Some(session);
        Ok(())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.point
    }

    /// The power cut: every file back to its last synced contents, the
    /// namespace back to its last commit. Until [`Self::remount`], every
    /// operation fails with EIO (the power is off).
    pub fn cut(&self) -> CutReport {
        self.disk().cut()
    }

    /// Unmounts and mounts the surviving state anew, so nothing of the old
    /// mount (the kernel's page and attribute caches) survives the cut.
    pub fn remount(&mut self) -> Result<()> {
        self.detach()?;
        self.attach()
    }

    /// fsyncs and fdatasyncs (of files and directories) so far.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }

    /// Unmounts, waiting out a mount still busy for a moment (a killed
    /// server's last files being closed), and ends the session's thread.
    fn detach(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let point = CString::new(self.point.as_os_str().as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: `point` is a NUL-terminated path that outlives the call.
            if unsafe { libc::umount(point.as_ptr()) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                return Err(e).with_context(|| format!("unmounting {}", self.point.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Unmounted: the session's thread reads ENODEV and ends, or
        // ECONNABORTED when the kernel aborted the connection as the
        // unmount raced a killed server's last requests. fuser 0.14's
        // `join` unwraps the thread's result and would panic on the
        // second, so the session is dropped instead (its mount handle
        // with it) and the thread ends on its own; it holds nothing the
        // next mount uses but the shared disk, which it no longer reaches.
        drop(session);
        Ok(())
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("lossyfs: {e:#}");
        }
    }
}
