//! Memory given back to the system: glibc's allocator keeps what a reload frees unless told.

/// Keeps every allocation of 1 MiB or more (a GeoIP file read whole, a zone file's text, a
/// large zone's table) in a mapping of its own, given back to the system when it is freed.
/// glibc otherwise raises its threshold to the size of the last such block freed: after one
/// GeoIP reload the next 8 MB file landed in the heap, and the soak's RSS went between 21 and
/// 29 MB with every replacement.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Gives back to the system what parsing and a replaced configuration freed. glibc keeps
/// freed memory in per-thread arenas: without this, a 10,000-record zone grew the process by
/// 60-80 MB over a few reloads.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Below this, a table is left where it is: it fits the TLB's reach without huge pages.
const HUGE_PAGES_FROM: usize = 4 << 20;

/// `table` copied into memory the kernel is asked to back with huge pages (2 MiB,
/// `MADV_HUGEPAGE`, which the default `madvise` setting of transparent huge pages honours). A
/// lookup in a table of tens of MB touches a few random entries: with 4 KiB pages each of them
/// also misses the TLB, and walking the page tables costs as much again as the miss itself.
/// Small tables, and systems without transparent huge pages, keep the table as it is.
pub fn in_huge_pages<T: Copy>(table: Vec<T>) -> Vec<T> {
    let bytes = std::mem::size_of_val(table.as_slice());
    if bytes < HUGE_PAGES_FROM {
        return table;
    }
    let mut copy: Vec<T> = Vec::with_capacity(table.len());
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = copy.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let length = (start + bytes).saturating_sub(aligned) / PAGE * PAGE;
        // SAFETY: advice on pages of an allocation this function owns and has not written
        // yet; it changes how they are backed, never what they hold.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, length, libc::MADV_HUGEPAGE);
        }
    }
    copy.extend_from_slice(&table);
    copy
}
