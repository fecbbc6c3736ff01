//! The content of one regular file: what is durable, and the unsynced changes
//! layered over it.
//!
//! The latest content (what reads return) is the durable content, cut at
//! `zero_from` (a truncation not yet synced), with the dirty pages laid over
//! it and limited to `size`. `sync` writes the difference into the durable
//! content; `drop_unsynced` forgets it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Size of one page of the unsynced layer.
pub(crate) const PAGE: u64 = 4096;

/// Where a file's durable content lives.
#[derive(Debug)]
pub(crate) enum Durable {
    /// Nothing was ever made durable: the durable content is empty.
    Empty,
    /// Synced while the file had no durable name: kept in memory until a
    /// directory fsync gives it one (see `State::materialize`).
    Mem(Vec<u8>),
    /// A file in the backing directory (possibly unlinked there already, in
    /// which case the open descriptor keeps its content).
    Backing(File),
}

/// One unsynced change, remembered in order only in torn mode.
#[derive(Debug, Clone)]
pub(crate) enum LogOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug)]
pub(crate) struct FileData {
    pub(crate) durable: Durable,
    /// Length of the durable content.
    pub(crate) durable_size: u64,
    /// Latest length.
    pub(crate) size: u64,
    /// Bytes at or after this offset that are not in `pages` read as zeros
    /// (an unsynced truncation). `u64::MAX` when there is none.
    zero_from: u64,
    /// Latest content of every page written since the last sync.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The unsynced operations in order (torn mode only).
    pub(crate) log: Option<Vec<LogOp>>,
}

impl FileData {
    pub(crate) fn new(durable: Durable, durable_size: u64, torn: bool) -> Self {
        FileData {
            durable,
            durable_size,
            size: durable_size,
            zero_from: u64::MAX,
            pages: BTreeMap::new(),
            log: torn.then(Vec::new),
        }
    }

    /// Whether anything differs from the durable content.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.pages.is_empty() || self.size != self.durable_size || self.zero_from != u64::MAX
    }

    /// Bytes held by the unsynced layer.
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Reads durable bytes at `offset` into `buf`; what lies past the durable
    /// end reads as zeros.
    fn read_durable(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        if offset >= self.durable_size {
            return Ok(());
        }
        let n = (self.durable_size - offset).min(buf.len() as u64) as usize;
        match &self.durable {
            Durable::Empty => {}
            Durable::Mem(v) => {
                let start = offset as usize;
                let end = (start + n).min(v.len());
                if start < end {
                    buf[..end - start].copy_from_slice(&v[start..end]);
                }
            }
            Durable::Backing(f) => {
                let mut done = 0;
                while done < n {
                    match f.read_at(&mut buf[done..n], offset + done as u64) {
                        Ok(0) => break,
                        Ok(k) => done += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// The latest content of `[offset, offset + buf.len())`, ignoring `size`.
    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if self.zero_from > offset {
            let durable_end = end.min(self.zero_from);
            self.read_durable(offset, &mut buf[..(durable_end - offset) as usize])?;
            buf[(durable_end - offset) as usize..].fill(0);
        } else {
            buf.fill(0);
        }
        if buf.is_empty() {
            return Ok(());
        }
        for (&index, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of the latest content.
    pub(crate) fn read(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset.saturating_add(u64::from(len)));
        let mut buf = vec![0u8; (end - offset) as usize];
        self.read_raw(offset, &mut buf)?;
        Ok(buf)
    }

    fn page_mut(&mut self, index: u64) -> io::Result<&mut [u8]> {
        if !self.pages.contains_key(&index) {
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            let start = index * PAGE;
            if start < self.size {
                // Bytes past the latest size are zero in the latest content.
                let n = (self.size - start).min(PAGE) as usize;
                self.read_raw(start, &mut page[..n])?;
            }
            self.pages.insert(index, page);
        }
        Ok(self.pages.get_mut(&index).expect("page just inserted"))
    }

    /// Writes `data` at `offset` into the unsynced layer.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut pos = offset;
        while pos < end {
            let index = pos / PAGE;
            let in_page = (pos - index * PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - pos) as usize);
            let src = &data[(pos - offset) as usize..(pos - offset) as usize + n];
            self.page_mut(index)?[in_page..in_page + n].copy_from_slice(src);
            pos += n as u64;
        }
        self.size = self.size.max(end);
        if let Some(log) = &mut self.log {
            log.push(LogOp::Write {
                offset,
                data: data.to_vec(),
            });
        }
        Ok(())
    }

    /// Sets the latest length (truncate or extend with zeros).
    pub(crate) fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len < self.size {
            // Pages wholly past the new end are gone; the rest of a partial
            // page is zeroed so a later extension reads zeros there.
            let first_gone = len.div_ceil(PAGE);
            drop(self.pages.split_off(&first_gone));
            if len % PAGE != 0 {
                let index = len / PAGE;
                let in_page = (len % PAGE) as usize;
                self.page_mut(index)?[in_page..].fill(0);
            }
            self.zero_from = self.zero_from.min(len);
        }
        self.size = len;
        if let Some(log) = &mut self.log {
            log.push(LogOp::SetLen(len));
        }
        Ok(())
    }

    /// Makes the latest content durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.is_dirty() {
            return Ok(());
        }
        let size = self.size;
        let zero_from = self.zero_from;
        match &mut self.durable {
            Durable::Backing(f) => {
                if zero_from < self.durable_size {
                    f.set_len(zero_from)?;
                }
                for (&index, page) in &self.pages {
                    let start = index * PAGE;
                    if start >= size {
                        continue;
                    }
                    let n = (size - start).min(PAGE) as usize;
                    f.write_all_at(&page[..n], start)?;
                }
                f.set_len(size)?;
            }
            durable => {
                let mut v = match std::mem::replace(durable, Durable::Empty) {
                    Durable::Mem(v) => v,
                    _ => Vec::new(),
                };
                v.truncate(zero_from.min(v.len() as u64) as usize);
                v.resize(size as usize, 0);
                for (&index, page) in &self.pages {
                    let start = index * PAGE;
                    if start >= size {
                        continue;
                    }
                    let n = (size - start).min(PAGE) as usize;
                    v[start as usize..start as usize + n].copy_from_slice(&page[..n]);
                }
                *durable = Durable::Mem(v);
            }
        }
        self.durable_size = size;
        self.forget_unsynced();
        Ok(())
    }

    fn forget_unsynced(&mut self) {
        self.pages.clear();
        self.zero_from = u64::MAX;
        self.size = self.durable_size;
        if let Some(log) = &mut self.log {
            log.clear();
        }
    }

    /// Power cut: the latest content becomes the durable content again. In
    /// torn mode, `keep` of the logged operations (a prefix) are first
    /// applied to the durable content, as if the page cache had written them
    /// back just before the cut.
    pub(crate) fn drop_unsynced(&mut self, keep: usize) -> io::Result<()> {
        if keep > 0 {
            if let Some(log) = self.log.take() {
                let result = self.apply_to_durable(&log[..keep.min(log.len())]);
                self.log = Some(log);
                result?;
            }
        }
        self.forget_unsynced();
        Ok(())
    }

    fn apply_to_durable(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let Durable::Backing(f) = &self.durable else {
            // Only files with a durable name survive a cut, and those always
            // have a backing file.
            return Ok(());
        };
        for op in ops {
            match op {
                LogOp::Write { offset, data } => f.write_all_at(data, *offset)?,
                LogOp::SetLen(len) => f.set_len(*len)?,
            }
        }
        self.durable_size = f.metadata()?.len();
        Ok(())
    }

    /// Copies the durable content into `dest` (a new backing file).
    pub(crate) fn copy_durable_to(&self, dest: &File) -> io::Result<()> {
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while offset < self.durable_size {
            let n = (self.durable_size - offset).min(buf.len() as u64) as usize;
            self.read_durable(offset, &mut buf[..n])?;
            dest.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }
        dest.set_len(self.durable_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain `Vec` model of the latest content, checked against `FileData`
    /// after every step.
    fn check(data: &FileData, model: &[u8]) {
        assert_eq!(data.size, model.len() as u64);
        assert_eq!(data.read(0, u32::MAX).unwrap(), model);
        // Unaligned reads too.
        for (off, len) in [(1u64, 10u32), (4090, 20), (5000, 8192)] {
            let got = data.read(off, len).unwrap();
            let start = (off as usize).min(model.len());
            let end = (off as usize + len as usize).min(model.len());
            assert_eq!(got, &model[start..end], "read at {off} len {len}");
        }
    }

    fn model_write(model: &mut Vec<u8>, off: usize, bytes: &[u8]) {
        if model.len() < off + bytes.len() {
            model.resize(off + bytes.len(), 0);
        }
        model[off..off + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn writes_truncates_and_syncs_match_a_plain_buffer() {
        let mut data = FileData::new(Durable::Empty, 0, false);
        let mut model = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut durable_model = Vec::new();
        for step in 0..2000 {
            match next() % 10 {
                0 => {
                    let len = (next() % 20_000) as usize;
                    data.set_len(len as u64).unwrap();
                    model.resize(len, 0);
                }
                1 => {
                    data.sync().unwrap();
                    durable_model = model.clone();
                }
                2 => {
                    data.drop_unsynced(0).unwrap();
                    model = durable_model.clone();
                }
                _ => {
                    let off = (next() % 20_000) as usize;
                    let len = (next() % 9000) as usize;
                    let byte = (step % 251 + 1) as u8;
                    let bytes = vec![byte; len];
                    data.write(off as u64, &bytes).unwrap();
                    model_write(&mut model, off, &bytes);
                }
            }
            check(&data, &model);
        }
    }

    #[test]
    fn truncate_then_extend_reads_zeros_over_old_durable_bytes() {
        let mut data = FileData::new(Durable::Mem(vec![7u8; 10_000]), 10_000, false);
        data.set_len(100).unwrap();
        data.write(5000, b"x").unwrap();
        let got = data.read(0, u32::MAX).unwrap();
        assert_eq!(got.len(), 5001);
        assert!(got[..100].iter().all(|&b| b == 7));
        assert!(got[100..5000].iter().all(|&b| b == 0));
        assert_eq!(got[5000], b'x');
        data.sync().unwrap();
        match &data.durable {
            Durable::Mem(v) => assert_eq!(v, &got),
            other => panic!("unexpected durable {other:?}"),
        }
    }
}
