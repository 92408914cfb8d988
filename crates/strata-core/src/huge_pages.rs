//! Big tensors on transparent huge pages. The first write to fresh memory faults once a 4 KiB
//! page, and the kernel clears each page it maps: 262,144 faults for a gigabyte. Where the
//! kernel gives huge pages to memory that asks for them (`madvise`, Debian's default), a
//! gigabyte takes 512 faults of 2 MiB instead: copying a gigabyte into fresh memory took
//! 0.15-0.25 s in place of 0.57-0.79 s here (a C probe on a quiet machine), though a
//! process's first such copy was slower either way and more so with huge pages (0.5-2.8 s
//! against 0.6-1.7). Every upload the server assembles is such a copy, as are a client's
//! first download and export. The memory is the same; the kernel may ignore the advice.

/// Buffers smaller than this stay on ordinary pages (a huge page would round them up).
const MIN_BYTES: usize = 8 << 20;

/// A huge page, on x86-64 and on arm64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// `len` zeros, on huge pages where the buffer is big enough and the kernel obliges. The
/// zeros are not written: the kernel maps them as the values are first written.
pub fn zeroed(len: usize) -> Vec<f32> {
    let values = vec![0.0f32; len];
    advise_huge_pages(&values);
    values
}

/// The whole 2 MiB pages inside `values`, if it is at least [`MIN_BYTES`] long.
fn huge_page_span(start: usize, bytes: usize) -> Option<(usize, usize)> {
    if bytes < MIN_BYTES {
        return None;
    }
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    (end > first).then(|| (first, end - first))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(values: &[f32]) {
    let Some((first, len)) = huge_page_span(values.as_ptr() as usize, std::mem::size_of_val(values)) else {
        return;
    };
    // SAFETY: the range lies inside `values`' allocation, which outlives the call, and
    // MADV_HUGEPAGE changes how the kernel backs the pages, never their contents. A refusal
    // (a kernel without transparent huge pages) leaves them as they were: nothing to handle.
    unsafe {
        libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_values: &[f32]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_huge_pages_inside_a_big_buffer_are_advised() {
        assert_eq!(huge_page_span(4096, MIN_BYTES - 4), None, "small buffers stay as they are");
        let (first, len) = huge_page_span(HUGE_PAGE + 16, MIN_BYTES).expect("big enough");
        assert_eq!((first, len), (2 * HUGE_PAGE, MIN_BYTES - HUGE_PAGE));
        assert_eq!(huge_page_span(0, MIN_BYTES), Some((0, MIN_BYTES)));
    }

    /// Where the kernel gives huge pages on request, a big buffer gets them once written.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_big_buffer_is_backed_by_huge_pages_once_written() {
        let setting = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !setting.contains("[madvise]") && !setting.contains("[always]") {
            eprintln!("skipped: this kernel gives no huge pages on request ({})", setting.trim());
            return;
        }
        let mut values = zeroed(16 << 18); // 64 MiB
        values.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
        // The advice splits the mapping where the whole huge pages begin: look in the middle.
        let middle = values.as_ptr() as usize + std::mem::size_of_val(values.as_slice()) / 2;
        let huge_kib = anon_huge_kib(middle).expect("the buffer's mapping is in smaps");
        // How many the kernel finds room for depends on its free memory: at least one.
        assert!(huge_kib >= 2 << 10, "none of the 64 MiB buffer is on huge pages ({huge_kib} KiB)");
        assert_eq!(values[12345], 12345.0);
    }

    /// `AnonHugePages` of the mapping holding `address`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn anon_huge_kib(address: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-') && !r.ends_with(':')) {
                let (start, end) = range.split_once('-')?;
                let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
                inside = (start..end).contains(&address);
            } else if inside && let Some(kib) = line.strip_prefix("AnonHugePages:") {
                return kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
        None
    }
}
