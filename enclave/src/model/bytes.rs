//! The memory the model file is read into (trusted side, inside the enclave).
//!
//! The file is read once, into an anonymous mapping aligned to 2 MiB and advised for
//! transparent huge pages (`MADV_HUGEPAGE`; Linux's default THP mode, `madvise`, grants
//! them only on request). A decode step streams every weight once; with 2 MiB pages it
//! spares the TLB some 24 000 page walks per token for a 98 MB model (a few per cent of
//! decode speed here, bench/RESULTS.md; the prefetching in `native::matmul_rows` is what
//! keeps the stream at DRAM speed).
//! Where huge pages are refused, the mapping still works with ordinary pages.
//!
//! The bytes are exactly the file's: the digest the attestation claims is computed over
//! this buffer, and the model is parsed from it.

use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::Path;

use memmap2::MmapMut;

/// Transparent huge page size on x86-64.
const HUGE_PAGE: usize = 2 << 20;

/// A model file's bytes, in huge-page-backed memory where the OS grants it.
pub struct ModelBytes {
    storage: Storage,
}

enum Storage {
    /// An anonymous mapping; the file starts at `start` (2 MiB-aligned) and is `len` long.
    Mapped { map: MmapMut, start: usize, len: usize },
    /// Bytes already in memory (tests, small files).
    Heap(Vec<u8>),
}

impl ModelBytes {
    /// Reads the whole of `path`. The error is the I/O error of the open, the read, or of
    /// a file whose length changed while it was read.
    pub fn read(path: &Path) -> std::io::Result<ModelBytes> {
        let mut file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("model file larger than the address space"))?;
        let mut map = MmapMut::map_anon(len + HUGE_PAGE)?;
        let start = map.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        #[cfg(target_os = "linux")]
        {
            // Advice, not a requirement: a kernel without THP leaves ordinary pages.
            let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
        }
        file.read_exact(&mut map[start..start + len])?;
        let mut probe = [0u8; 1];
        if file.read(&mut probe)? != 0 {
            return Err(std::io::Error::other("model file grew while it was read"));
        }
        Ok(ModelBytes { storage: Storage::Mapped { map, start, len } })
    }
}

impl From<Vec<u8>> for ModelBytes {
    fn from(bytes: Vec<u8>) -> Self {
        ModelBytes { storage: Storage::Heap(bytes) }
    }
}

impl Deref for ModelBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, start, len } => &map[*start..*start + *len],
            Storage::Heap(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for ModelBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.storage {
            Storage::Mapped { .. } => "mapped",
            Storage::Heap(_) => "heap",
        };
        f.debug_struct("ModelBytes").field("len", &self.len()).field("storage", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_holds_exactly_the_files_bytes_aligned_for_huge_pages() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4095, 3 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let bytes = ModelBytes::read(&path).unwrap();
            assert_eq!(&bytes[..], &data[..], "{len} bytes");
            assert_eq!(bytes.as_ptr() as usize % HUGE_PAGE, 0, "{len} bytes");
        }
        assert_eq!(&ModelBytes::from(vec![1, 2, 3])[..], &[1, 2, 3]);
        let missing = ModelBytes::read(&dir.path().join("absent")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
