//! The Straddle policy module: [`straddle_policy`] behind the WIT `policy` world.
//!
//! Built for `wasm32-unknown-unknown` with `--profile guest` by the
//! `straddle-policy-artifact` build script, which wraps the core module into a
//! component: the *template*. The module has no imports.
//!
//! The plan is not compiled in. The module carries a 24-byte descriptor,
//! [`PLAN_SLOT`], `MAGIC[16] | ptr: u32 | len: u32` (little-endian), that
//! `straddle_policy_artifact::embed::embed_plan` finds in the data section and
//! patches after appending the plan as a page-aligned data segment. Until then
//! `ptr` and `len` are zero: `review` denies every request and `describe`
//! returns an empty bundle. Neither ever traps on a missing or corrupt plan.
//!
//! The descriptor is a `static mut` read with `read_volatile`, so LLVM cannot
//! constant-fold the zeros it was linked with, and `#[used]`, so it is kept.
//! The magic must stay equal to `straddle_policy_artifact::embed::SLOT_MAGIC`;
//! the artifact's tests check that the built template has exactly one slot.

use straddle_policy::Plan;

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
});

use exports::straddle::policy::admission;
use exports::straddle::policy::review::{Bundle, Guest, Operation, Request, Verdict};
use straddle_policy::admission::{Admission::Reviewed, review_admission};

/// The plan descriptor: `MAGIC[16] | ptr: u32 | len: u32`.
#[repr(C, align(4))]
struct PlanSlot {
    magic: [u8; 16],
    ptr: u32,
    len: u32,
}

/// Must equal `straddle_policy_artifact::embed::SLOT_MAGIC`. Non-zero, so the
/// slot lands in `.data` (bytes the embedder can patch), never in `.bss`.
const SLOT_MAGIC: [u8; 16] = *b"STRADDLE\xffPLAN\xfe\x00\x01";

#[used]
static mut PLAN_SLOT: PlanSlot = PlanSlot {
    magic: SLOT_MAGIC,
    ptr: 0,
    len: 0,
};

#[cfg(target_arch = "wasm32")]
fn memory_bytes() -> u64 {
    core::arch::wasm32::memory_size::<0>() as u64 * 65536
}

#[cfg(not(target_arch = "wasm32"))]
fn memory_bytes() -> u64 {
    // Native builds (clippy, `cargo check --workspace`) are never patched.
    0
}

/// The embedded plan bytes, if the descriptor was patched sensibly.
fn plan_bytes() -> Result<&'static [u8], &'static str> {
    // SAFETY: raw-pointer volatile reads of plain integers in a static that
    // nothing in the module writes; the embedder patched them before load.
    let (ptr, len) = unsafe {
        (
            core::ptr::read_volatile(&raw const PLAN_SLOT.ptr),
            core::ptr::read_volatile(&raw const PLAN_SLOT.len),
        )
    };
    if len == 0 {
        return Err("the plan descriptor is not patched (is this the bare template?)");
    }
    if ptr == 0 || u64::from(ptr) + u64::from(len) > memory_bytes() {
        return Err("the plan descriptor points outside linear memory");
    }
    // SAFETY: non-null and inside linear memory (checked above); the embedded
    // segment is never handed out by the allocator (it serves its own `.bss`
    // arena and memory it grows).
    Ok(unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) })
}

/// The embedded plan, parsed (framing only: records are read per lookup).
fn valid_plan() -> Result<Plan<'static>, String> {
    let bytes = plan_bytes().map_err(str::to_owned)?;
    Plan::parse(bytes).map_err(|e| e.to_string())
}

/// `memcmp` eight bytes at a time. The engine compares keys and names with
/// `==` on strings, which LLVM lowers to `memcmp` calls; the one
/// compiler-builtins links for wasm32 compares a byte at a time (and in the
/// guest every loop iteration also pays an interruption check). Its symbol
/// is weak, so this one is linked instead.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes, as for C's `memcmp`.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and the caller gives n readable bytes.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<[u8; 8]>().read_unaligned(),
                b.add(i).cast::<[u8; 8]>().read_unaligned(),
            )
        };
        if x != y {
            // Big-endian, so the first differing byte decides, as in C.
            return if u64::from_be_bytes(x) < u64::from_be_bytes(y) {
                -1
            } else {
                1
            };
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: arena::BumpThenTalc = arena::BumpThenTalc::new();

/// Where the heap comes from. A review allocates a small multiple of its
/// object and frees all of it before the host's post-return call ends, and
/// the host runs the next review in the same instance (or a fresh one), so
/// what matters is the cost of a review, not long-lived fragmentation:
/// - a bump allocator over a zero-initialised `.bss` arena: part of the
///   module's initial memory, already accessible (no `memory.grow`, which
///   makes the host change page protection on the way in and again when the
///   pooled memory is reset), and only the pages a review touches are ever
///   faulted in. Freeing gives back the latest allocation (what growing
///   strings and vectors need), and once no arena block is live the whole
///   arena is free again: the next review starts at its beginning;
/// - past the arena (objects of several hundred KiB), talc on memory grown
///   as usual, bounded by the host's memory limit.
#[cfg(target_arch = "wasm32")]
mod arena {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::Cell;
    use core::mem::MaybeUninit;

    use talc::base::Talc;
    use talc::base::binning::Binning;
    use talc::source::Source;

    /// Enough for objects of a few hundred KiB (a chart's StatefulSet is
    /// 5-20 KB and a review allocates a small multiple of it).
    const ARENA_BYTES: usize = 2 << 20;
    const PAGE_BYTES: usize = 64 << 10;
    /// Covers talc's per-heap and per-chunk bookkeeping when sizing a grow.
    const GROW_SLACK: usize = 1 << 10;

    static mut ARENA: [MaybeUninit<u8>; ARENA_BYTES] = [MaybeUninit::uninit(); ARENA_BYTES];

    pub struct BumpThenTalc {
        /// Offset of the first free arena byte.
        top: Cell<usize>,
        /// Arena blocks handed out and not yet freed.
        live: Cell<usize>,
        grown: talc::cell::TalcSyncCell<Grow, talc::wasm::WasmBinning>,
    }

    // SAFETY: a wasm32 module without threads; `top` is never shared.
    unsafe impl Sync for BumpThenTalc {}

    impl BumpThenTalc {
        pub const fn new() -> Self {
            BumpThenTalc {
                top: Cell::new(0),
                live: Cell::new(0),
                grown: talc::cell::TalcSyncCell::new_wasm(Grow),
            }
        }

        fn base() -> usize {
            (&raw mut ARENA).cast::<u8>() as usize
        }

        /// Whether `ptr` was handed out from the arena.
        fn owns(ptr: *mut u8) -> bool {
            (ptr as usize).wrapping_sub(Self::base()) < ARENA_BYTES
        }

        /// `layout` from the arena, if it fits.
        fn bump(&self, layout: Layout) -> *mut u8 {
            let base = Self::base();
            let start = (base + self.top.get()).next_multiple_of(layout.align()) - base;
            match start.checked_add(layout.size()) {
                Some(end) if end <= ARENA_BYTES => {
                    self.top.set(end);
                    self.live.set(self.live.get() + 1);
                    (base + start) as *mut u8
                }
                _ => core::ptr::null_mut(),
            }
        }
    }

    // SAFETY: arena blocks are disjoint (the bump only moves forward, except
    // to give back the latest block, or all of the arena once no block is
    // live), aligned as asked and inside the static arena; everything else is
    // talc's.
    unsafe impl GlobalAlloc for BumpThenTalc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = self.bump(layout);
            if !ptr.is_null() {
                return ptr;
            }
            // SAFETY: forwarded as is.
            unsafe { self.grown.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if Self::owns(ptr) {
                let live = self.live.get().saturating_sub(1);
                self.live.set(live);
                if live == 0 {
                    self.top.set(0);
                } else if ptr as usize + layout.size() == Self::base() + self.top.get() {
                    self.top.set(ptr as usize - Self::base());
                }
                return;
            }
            // SAFETY: not from the arena, so from talc.
            unsafe { self.grown.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let base = Self::base();
            // The latest arena block grows or shrinks in place.
            if Self::owns(ptr) && ptr as usize + layout.size() == base + self.top.get() {
                let end = ptr as usize - base + new_size;
                if end <= ARENA_BYTES {
                    self.top.set(end);
                    return ptr;
                }
            }
            if !Self::owns(ptr) {
                // SAFETY: not from the arena, so from talc.
                return unsafe { self.grown.realloc(ptr, layout, new_size) };
            }
            // SAFETY: `layout` with the new size is valid (GlobalAlloc contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: the GlobalAlloc contract, forwarded.
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller size and disjoint.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }

    /// Talc's memory once the arena is used up: pages grown for it.
    #[derive(Debug)]
    pub struct Grow;

    // SAFETY: `acquire` never allocates; grown pages are fresh memory.
    unsafe impl Source for Grow {
        fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
            let bytes = layout
                .size()
                .checked_add(layout.align() + GROW_SLACK)
                .ok_or(())?;
            let pages = bytes.div_ceil(PAGE_BYTES);
            let previous = core::arch::wasm32::memory_grow::<0>(pages);
            if previous == usize::MAX {
                return Err(());
            }
            // SAFETY: pages just added to linear memory, used by nothing else.
            unsafe { talc.claim((previous * PAGE_BYTES) as *mut u8, pages * PAGE_BYTES) }
                .map(drop)
                .ok_or(())
        }
    }
}

struct Component;

impl Guest for Component {
    fn review(req: Request) -> Verdict {
        let plan = match valid_plan() {
            Ok(plan) => plan,
            Err(why) => return Verdict::Deny(format!("policy module has no valid plan: {why}")),
        };
        let operation = match req.operation {
            Operation::Create => straddle_policy::Operation::Create,
            Operation::Update => straddle_policy::Operation::Update,
            Operation::Delete => straddle_policy::Operation::Delete,
            Operation::Connect => straddle_policy::Operation::Connect,
        };
        let request = straddle_policy::Request {
            cluster: &req.cluster,
            operation,
            kind: &req.kind,
            namespace: &req.namespace,
            name: &req.name,
            object: &req.object,
            old_object: req.old_object.as_deref(),
        };
        wit_verdict(straddle_policy::engine::review_plan(&plan, &request))
    }

    fn describe() -> Bundle {
        let info = valid_plan().ok().and_then(|plan| plan.bundle().ok());
        match info {
            Some(info) => Bundle {
                name: info.name.into_owned(),
                spec_digest: info.spec_digest.into_owned(),
                clusters: info.clusters.into_iter().map(|c| c.into_owned()).collect(),
                namespaces: info
                    .namespaces
                    .into_iter()
                    .map(|n| n.into_owned())
                    .collect(),
                compiler_version: info.compiler_version.into_owned(),
            },
            None => Bundle {
                name: String::new(),
                spec_digest: String::new(),
                clusters: Vec::new(),
                namespaces: Vec::new(),
                compiler_version: String::new(),
            },
        }
    }
}

impl admission::Guest for Component {
    fn review_admission(cluster: String, body: String) -> Option<admission::Admission> {
        // Without a plan, `review` gives the denial that says so.
        let plan = valid_plan().ok()?;
        let Reviewed(reviewed) = review_admission(&plan, &cluster, &body) else {
            return None;
        };
        Some(admission::Admission {
            uid: reviewed.uid,
            kind: reviewed.kind,
            namespace: reviewed.namespace,
            name: reviewed.name,
            operation: match reviewed.operation {
                straddle_policy::Operation::Create => Operation::Create,
                straddle_policy::Operation::Update => Operation::Update,
                straddle_policy::Operation::Delete => Operation::Delete,
                straddle_policy::Operation::Connect => Operation::Connect,
            },
            dry_run: reviewed.dry_run,
            verdict: reviewed.verdict.map(wit_verdict),
        })
    }
}

fn wit_verdict(verdict: straddle_policy::Verdict) -> Verdict {
    match verdict {
        straddle_policy::Verdict::Allow => Verdict::Allow,
        straddle_policy::Verdict::Patch(patch) => Verdict::Patch(patch),
        straddle_policy::Verdict::Deny(message) => Verdict::Deny(message),
        straddle_policy::Verdict::Warn(message) => Verdict::Warn(message),
    }
}

// Exported only in the module: the component-model symbol names
// (`cabi_post_straddle:policy/review@0.1.0#describe`) cannot be written in
// the linker version script of a native cdylib, which `cargo build
// --workspace` also links.
#[cfg(target_arch = "wasm32")]
export!(Component);
