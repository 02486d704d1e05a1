//! The `rgshield` binary: parse the command line and hand it to [`cli::run`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Keep freed heap memory in the process instead of trimming it back to the kernel at every
/// free (glibc's default trims anything over 128 KiB at the top of the heap). The samplers
/// allocate and free a chunk's layers (hundreds of KiB) thousands of times; with trimming, every
/// chunk paid fresh page faults and zeroing — 16% of the up-pass at width 64 (perf,
/// `docs/performance.md`). Blocks of 4 MiB and more are still mapped and returned on their own:
/// with a 32 MiB threshold the large f64 temporaries of `analyze` fragmented the kept heap and
/// raised its peak memory by 16%; at 4 MiB the peak is below the untuned one and the speed equal.
fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called once before any thread starts.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

fn main() -> ExitCode {
    keep_freed_heap();
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
