/// mimalloc instead of the system allocator: thread-local heaps, and memory freed on another
/// thread goes back through lock-free lists. With glibc's allocator, shadow work (on an
/// idle-priority thread) freeing what a request thread allocated takes that thread's arena
/// lock; preempted while holding it, it stalls the request thread: priority inversion that
/// showed up as a several-fold client p99 in the shadow benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    banyan::cli::main()
}
