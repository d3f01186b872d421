//! The WAL's appends gathered into large writes: a shim over SQLite's default VFS.
//!
//! SQLite writes each WAL frame with two `pwrite`s, its 24-byte header and then its page
//! (`walWriteOneFrame`), so an import's batch of ~500 frames costs ~1000 system calls, each
//! unaligned with the file's pages. On the machine the targets are set for, writing the same
//! bytes 123 KB at a time took an eighth of the system time, and the collector's CPU for a
//! 100k-message sync fell by 6–13 % with this shim (`bench/PROFILE.md`, round twenty-six). No
//! crate wraps SQLite's own VFS this way (the Rust VFS crates implement storage of their own), so
//! this module does, in `unsafe` code kept to this file.
//!
//! The shim, registered as [`VFS_NAME`], hands every file but a WAL to the default VFS as it is.
//! A WAL file's appends go into a buffer of [`BUFFER_BYTES`], which is written out:
//! - as soon as it holds the whole of a *commit frame* (a frame header whose second field, the
//!   database size, is not zero: the WAL format's commit mark). SQLite publishes a commit to
//!   other connections (the wal-index header) only after the last frame is written, and the
//!   collector answers a batch only after the commit: so a commit's frames are in the operating
//!   system before anyone can read them or hear of them, and `kill -9` loses no acknowledged batch;
//! - before any other call on that file (a read, a size, a sync, a truncation, a file control,
//!   the close), so SQLite never sees the file without its own writes, and a sync still syncs them;
//! - before a write anywhere but at the buffer's end, which is then written directly. SQLite
//!   writes new frames in order; it writes at an earlier place only to overwrite a page already in
//!   this transaction or to rewrite the checksums of such frames at the commit
//!   (`walRewriteChecksums`), and those writes are never held, so the last of them, a commit
//!   frame's new header, is in the file before the commit is published;
//! - when it is full.
//!
//! A buffer that could not be written is dropped and its error returned to SQLite, which then
//! fails that statement or commit as it would have failed the write itself.
//!
//! *Invariant:* when a transaction's commit returns, every byte SQLite wrote for it is in the
//! file (tested in `wal_appends_tests.rs` by copying the files right after commits, as a `kill -9`
//! would leave them, and opening the copy with SQLite's own VFS; and by `kill -9` in the
//! end-to-end tests).

#![allow(unsafe_code)]

use rusqlite::{ffi, Connection, OpenFlags};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

/// The name connections open the store with.
pub const VFS_NAME: &CStr = c"icsync-wal-appends";
/// How many bytes of appends a WAL file holds before writing them: 15 frames of 8 KiB pages.
/// The default VFS writes at most 128 KiB − 1 per call (`seekAndWriteFd` masks the length with
/// `0x1ffff` and reports a longer write as a full disk).
pub const BUFFER_BYTES: usize = 0x1ffff;

/// The WAL header's size, and its page-size field's place (the WAL format, sqlite.org/fileformat2).
const WAL_HEADER: i64 = 32;
const FRAME_HEADER: i64 = 24;
const WAL_MAGIC: [u32; 2] = [0x377f_0682, 0x377f_0683];

/// Opens `path` through the shim; if SQLite would not take the shim, through its default VFS,
/// which is only slower.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    match register() {
        Ok(name) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), name),
        Err(why) => {
            tracing::warn!(%why, "the WAL is written frame by frame");
            Connection::open(path)
        }
    }
}

/// Registers the shim once per process; every later call returns the first result.
pub fn register() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find with NULL returns the default VFS, which lives for the
            // process; the shim copies it and is leaked, so it lives for the process too.
            unsafe {
                let inner = ffi::sqlite3_vfs_find(std::ptr::null());
                if inner.is_null() {
                    return Err("SQLite has no default VFS to wrap".into());
                }
                let mut shim = *inner;
                shim.szOsFile = shim_offset() + (*inner).szOsFile;
                shim.pNext = std::ptr::null_mut();
                shim.zName = VFS_NAME.as_ptr();
                shim.xOpen = Some(shim_open);
                let shim: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(shim));
                let _ = INNER.set(InnerVfs(inner));
                let rc = ffi::sqlite3_vfs_register(shim, 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!(
                        "cannot register the WAL-appends VFS (SQLite code {rc})"
                    ));
                }
                Ok(())
            }
        })
        .clone()
        .map(|()| VFS_NAME)
}

/// The default VFS the shim wraps.
struct InnerVfs(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer names SQLite's static default VFS, which SQLite itself shares between threads.
unsafe impl Send for InnerVfs {}
unsafe impl Sync for InnerVfs {}
static INNER: OnceLock<InnerVfs> = OnceLock::new();

/// A WAL file as the shim opens it: SQLite's file header with the shim's methods, the held
/// appends, then the default VFS's own file object at [`shim_offset`].
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    appends: *mut Appends,
}

/// Where the wrapped file object starts inside a WAL file, aligned for it.
fn shim_offset() -> c_int {
    let size = std::mem::size_of::<WalFile>();
    (size.div_ceil(16) * 16) as c_int
}

/// The appends held for one WAL file.
struct Appends {
    data: Vec<u8>,
    /// The file offset of `data[0]`.
    start: i64,
    /// The end of the latest append: SQLite's next new frame starts here.
    frontier: Option<i64>,
    /// The WAL's page size, from its header: `None` until looked for, 0 if it could not be
    /// read (nothing is held then).
    page_size: Option<i64>,
    /// The end of a commit frame seen in `data` and not yet complete.
    commit_end: Option<i64>,
}

impl Appends {
    fn end(&self) -> i64 {
        self.start + self.data.len() as i64
    }
}

unsafe fn inner_file(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY (callers): `file` is a WalFile the shim opened, `shim_offset` bytes before the
    // wrapped file object inside SQLite's allocation of `szOsFile` bytes.
    unsafe { (file as *mut u8).add(shim_offset() as usize) as *mut ffi::sqlite3_file }
}

unsafe fn inner_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY (callers): the wrapped file was opened successfully, so its methods are set and static.
    unsafe { &*(*inner_file(file)).pMethods }
}

unsafe fn appends<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Appends {
    // SAFETY (callers): a WalFile's `appends` is set at open and freed only at close; SQLite calls
    // one connection's file from one thread at a time.
    unsafe { &mut *(*(file as *mut WalFile)).appends }
}

unsafe extern "C" fn shim_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let _ = vfs;
    let Some(InnerVfs(inner)) = INNER.get() else {
        return ffi::SQLITE_ERROR;
    };
    // SAFETY: SQLite gives `file` as `szOsFile` zeroed bytes; the default VFS's object fits at
    // its start (a file passed through) or at `shim_offset` (a WAL file).
    unsafe {
        let Some(open) = (**inner).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return open(*inner, name, file, flags, out_flags);
        }
        let wrapped = inner_file(file);
        let rc = open(*inner, name, wrapped, flags, out_flags);
        if (*wrapped).pMethods.is_null() {
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        let appends = Box::new(Appends {
            data: Vec::new(),
            start: 0,
            frontier: None,
            page_size: None,
            commit_end: None,
        });
        std::ptr::write(
            file as *mut WalFile,
            WalFile {
                base: ffi::sqlite3_file {
                    pMethods: methods_for((*wrapped).pMethods),
                },
                appends: Box::into_raw(appends),
            },
        );
        rc
    }
}

/// The shim's methods, of the wrapped methods' version (SQLite calls only what that version has).
fn methods_for(inner: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    static METHODS: OnceLock<MethodsTable> = OnceLock::new();
    // SAFETY: `inner` is the wrapped file's static methods table.
    let version = unsafe { (*inner).iVersion };
    &METHODS.get_or_init(|| MethodsTable(table(version))).0
}

struct MethodsTable(ffi::sqlite3_io_methods);
// SAFETY: a table of function pointers, never written after it is made.
unsafe impl Send for MethodsTable {}
unsafe impl Sync for MethodsTable {}

fn table(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(wal_close),
        xRead: Some(wal_read),
        xWrite: Some(wal_write),
        xTruncate: Some(wal_truncate),
        xSync: Some(wal_sync),
        xFileSize: Some(wal_file_size),
        xLock: Some(wal_lock),
        xUnlock: Some(wal_unlock),
        xCheckReservedLock: Some(wal_check_reserved_lock),
        xFileControl: Some(wal_file_control),
        xSectorSize: Some(wal_sector_size),
        xDeviceCharacteristics: Some(wal_device_characteristics),
        xShmMap: Some(wal_shm_map),
        xShmLock: Some(wal_shm_lock),
        xShmBarrier: Some(wal_shm_barrier),
        xShmUnmap: Some(wal_shm_unmap),
        xFetch: Some(wal_fetch),
        xUnfetch: Some(wal_unfetch),
    }
}

/// Writes the held appends out; on failure they are dropped and the error returned.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY (callers): `file` is an open WalFile.
    unsafe {
        let held = appends(file);
        held.commit_end = None;
        if held.data.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = write_through(file, &held.data, held.start);
        held.data.clear();
        rc
    }
}

unsafe fn write_through(file: *mut ffi::sqlite3_file, bytes: &[u8], offset: i64) -> c_int {
    // SAFETY (callers): `file` is an open WalFile; the wrapped write reads `bytes` only.
    unsafe {
        let Some(write) = inner_methods(file).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let Ok(len) = c_int::try_from(bytes.len()) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        write(
            inner_file(file),
            bytes.as_ptr() as *const c_void,
            len,
            offset,
        )
    }
}

/// The WAL's page size from its header's bytes, if they are a WAL header.
fn page_size_of(header: &[u8]) -> Option<i64> {
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let magic = word(0)?;
    let size = i64::from(word(8)?);
    (WAL_MAGIC.contains(&magic) && (512..=65536).contains(&size) && size.count_ones() == 1)
        .then_some(size)
}

/// Notes the commit frames whose headers lie in `data[from..]`: the buffer must be written once
/// it holds such a frame's end. A header cut by the buffer's end counts as a commit (the safe side).
fn note_commits(held: &mut Appends, from: usize) {
    let frame = held.page_size.unwrap_or(0) + FRAME_HEADER;
    let first_new = held.start + from as i64;
    let mut at = if first_new <= WAL_HEADER {
        WAL_HEADER
    } else {
        WAL_HEADER + (first_new - WAL_HEADER + frame - 1) / frame * frame
    };
    while at < held.end() {
        let i = (at - held.start) as usize;
        let commit = match held.data.get(i + 4..i + 8) {
            Some(size) => size != [0, 0, 0, 0],
            None => true,
        };
        if commit {
            let end = at + frame;
            held.commit_end = Some(held.commit_end.map_or(end, |e| e.max(end)));
        }
        at += frame;
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `buf` and an open WalFile.
    unsafe {
        let bytes = std::slice::from_raw_parts(buf as *const u8, amount.max(0) as usize);
        let held = appends(file);
        let appending = offset == 0 || held.frontier.is_none_or(|f| offset >= f);
        if !appending {
            // An overwrite inside this transaction's frames: never held (see the module's notes).
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            return write_through(file, bytes, offset);
        }
        if !held.data.is_empty()
            && (offset != held.end() || held.data.len() + bytes.len() > BUFFER_BYTES)
        {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let held = appends(file);
        held.frontier = Some(offset + bytes.len() as i64);
        if offset == 0 {
            held.page_size = Some(page_size_of(bytes).unwrap_or(0));
        } else if held.page_size.is_none() {
            learn_page_size(file);
        }
        let held = appends(file);
        let page_size = held.page_size.unwrap_or(0);
        // A held run starts at the WAL's header or at a frame's: else the geometry is not SQLite's
        // as this module knows it, and nothing is held.
        let starts_frame = offset == 0
            || (page_size > 0 && (offset - WAL_HEADER) % (page_size + FRAME_HEADER) == 0);
        if page_size == 0 || bytes.len() > BUFFER_BYTES || (held.data.is_empty() && !starts_frame) {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            return write_through(file, bytes, offset);
        }
        if held.data.is_empty() {
            held.start = offset;
        }
        let from = held.data.len();
        held.data.extend_from_slice(bytes);
        note_commits(held, from);
        if held.commit_end.is_some_and(|end| held.end() >= end) {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

/// Learns the page size of a WAL this connection did not start, from the file's header.
unsafe fn learn_page_size(file: *mut ffi::sqlite3_file) {
    // SAFETY (callers): `file` is an open WalFile with nothing held.
    unsafe {
        let mut header = [0u8; WAL_HEADER as usize];
        if let Some(read) = inner_methods(file).xRead {
            let rc = read(
                inner_file(file),
                header.as_mut_ptr() as *mut c_void,
                WAL_HEADER as c_int,
                0,
            );
            let size = if rc == ffi::SQLITE_OK {
                page_size_of(&header)
            } else {
                None
            };
            appends(file).page_size = Some(size.unwrap_or(0));
        }
    }
}

/// Every other method writes the held appends first, then asks the wrapped file.
macro_rules! flushing {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls this on an open WalFile with its own arguments.
            unsafe {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match inner_methods(file).$method {
                    Some(method) => method(inner_file(file) $(, $arg)*),
                    None => ffi::SQLITE_MISUSE,
                }
            }
        }
    };
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open WalFile once; its appends are freed here and nowhere else.
    unsafe {
        let rc = flush(file);
        let wal = file as *mut WalFile;
        drop(Box::from_raw((*wal).appends));
        (*wal).appends = std::ptr::null_mut();
        let closed = match inner_methods(file).xClose {
            Some(close) => close(inner_file(file)),
            None => ffi::SQLITE_OK,
        };
        if rc != ffi::SQLITE_OK {
            rc
        } else {
            closed
        }
    }
}

flushing!(wal_read, xRead, (buf: *mut c_void, amount: c_int, offset: i64));
flushing!(wal_truncate, xTruncate, (size: i64));
flushing!(wal_sync, xSync, (flags: c_int));
flushing!(wal_file_size, xFileSize, (size: *mut i64));
flushing!(wal_lock, xLock, (level: c_int));
flushing!(wal_unlock, xUnlock, (level: c_int));
flushing!(wal_check_reserved_lock, xCheckReservedLock, (out: *mut c_int));
flushing!(wal_file_control, xFileControl, (op: c_int, arg: *mut c_void));
flushing!(wal_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
flushing!(wal_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int));
flushing!(wal_shm_unmap, xShmUnmap, (delete: c_int));
flushing!(wal_fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
flushing!(wal_unfetch, xUnfetch, (offset: i64, page: *mut c_void));

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on an open WalFile.
    unsafe {
        match inner_methods(file).xSectorSize {
            Some(method) => method(inner_file(file)),
            None => 4096,
        }
    }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on an open WalFile.
    unsafe {
        match inner_methods(file).xDeviceCharacteristics {
            Some(method) => method(inner_file(file)),
            None => 0,
        }
    }
}

unsafe extern "C" fn wal_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this on an open WalFile (it never does: shared memory is the database's).
    unsafe {
        let _ = flush(file);
        if let Some(method) = inner_methods(file).xShmBarrier {
            method(inner_file(file));
        }
    }
}
