//! Putting a plan into the policy template, and reading it back.
//!
//! The guest links a 24-byte descriptor, `SLOT_MAGIC[16] | ptr: u32 | len: u32`
//! (little-endian), in an active data segment; `ptr` and `len` are zero in the
//! template. [`embed_plan`]:
//!
//! 1. finds the one core module holding the descriptor (the template is a
//!    component; a bare core module works too) and the descriptor in it;
//! 2. appends an active data segment with the plan at
//!    `A = initial_pages * 64 KiB`, which no allocator hands out (the guest's
//!    allocator only grows memory), and raises the memory minimum to cover it
//!    (and the DataCount section, if present);
//! 3. patches `ptr = A`, `len = plan.len()` in the descriptor;
//! 4. validates the result.
//!
//! Sections it does not touch are copied byte for byte, so the same template
//! and plan always give the same bytes.
//!
//! It refuses: an empty plan, a module that already has a plan, zero or more
//! than one descriptor, an imported, shared, 64-bit or custom-page-size
//! memory, more than one memory, and a descriptor in a passive or relocatable
//! (PIC) data segment.

use std::ops::Range;

use anyhow::{Context, Result, bail, ensure};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{ConstExpr, DataCountSection, DataSection, MemorySection, Section};
use wasmparser::{
    BinaryReader, DataKind, DataSectionReader, MemorySectionReader, Operator, Parser, Payload,
    TypeRef, Validator,
};

/// The descriptor's magic; must equal `SLOT_MAGIC` in `policy/guest/src/lib.rs`.
pub const SLOT_MAGIC: [u8; 16] = *b"STRADDLE\xffPLAN\xfe\x00\x01";
/// The descriptor's size: magic, `ptr: u32`, `len: u32`.
pub const SLOT_LEN: usize = 24;

const PAGE: u64 = 65536;
/// Pages addressable by a 32-bit memory.
const MAX_PAGES_32: u64 = 65536;

/// Section ids used here.
const MEMORY_SECTION: u8 = 5;
const DATA_SECTION: u8 = 11;
const DATA_COUNT_SECTION: u8 = 12;
/// A core module nested in a component.
const COMPONENT_CORE_MODULE_SECTION: u8 = 1;

/// Returns `template` (a policy component, or a bare core module) with `plan`
/// embedded. Deterministic: the same inputs give the same bytes.
pub fn embed_plan(template: &[u8], plan: &[u8]) -> Result<Vec<u8>> {
    ensure!(!plan.is_empty(), "the plan is empty");
    let out = if Parser::is_component(template) {
        let (sections, index) = slotted_module(template)?;
        let module = embed_core(&template[sections[index].contents.clone()], plan)?;
        let mut out = template[..8].to_vec();
        for (i, section) in sections.iter().enumerate() {
            if i == index {
                out.push(COMPONENT_CORE_MODULE_SECTION);
                push_len(&mut out, module.len())?;
                out.extend_from_slice(&module);
            } else {
                out.extend_from_slice(&template[section.whole.clone()]);
            }
        }
        out
    } else if Parser::is_core_wasm(template) {
        embed_core(template, plan)?
    } else {
        bail!("not a WebAssembly component or core module");
    };
    Validator::new()
        .validate_all(&out)
        .context("the module with the embedded plan does not validate")?;
    Ok(out)
}

/// Returns the plan embedded in a policy module (component or core module).
pub fn read_plan(module: &[u8]) -> Result<Vec<u8>> {
    let core = if Parser::is_component(module) {
        let (sections, index) = slotted_module(module)?;
        &module[sections[index].contents.clone()]
    } else if Parser::is_core_wasm(module) {
        module
    } else {
        bail!("not a WebAssembly component or core module");
    };
    let scan = scan_core(core)?;
    let slot = scan.single_slot()?;
    let (ptr, len) = slot_value(core, slot.at);
    ensure!(
        len != 0,
        "the module has no embedded plan (its descriptor is not patched: is this the bare template?)"
    );
    let (ptr, len) = (u64::from(ptr), u64::from(len));
    for segment in &scan.segments {
        let Some(offset) = segment.offset.filter(|_| segment.memory == 0) else {
            continue;
        };
        let (start, end) = (
            u64::from(offset),
            u64::from(offset) + segment.data.len() as u64,
        );
        if start <= ptr && ptr + len <= end {
            let at = segment.data.start + (ptr - start) as usize;
            return Ok(core[at..at + len as usize].to_vec());
        }
    }
    bail!("the plan descriptor points to {len} bytes at {ptr:#x}, which no data segment holds")
}

/// One section of a module or component: its id, the range of its contents,
/// and the range of the whole section (id and size included).
struct RawSection {
    id: u8,
    contents: Range<usize>,
    whole: Range<usize>,
}

/// Splits a module or component into its top-level sections.
fn sections(bytes: &[u8]) -> Result<Vec<RawSection>> {
    ensure!(
        bytes.len() >= 8 && bytes.starts_with(b"\0asm"),
        "not a WebAssembly binary"
    );
    let mut reader = BinaryReader::new(&bytes[8..], 8);
    let mut out = Vec::new();
    while !reader.eof() {
        let start = reader.original_position();
        let id = reader.read_u8()?;
        let len = reader.read_var_u32()? as usize;
        let contents_start = reader.original_position();
        reader.read_bytes(len)?;
        out.push(RawSection {
            id,
            contents: contents_start..contents_start + len,
            whole: start..contents_start + len,
        });
    }
    Ok(out)
}

/// The sections of a component, and the index of the one core module that
/// holds a plan descriptor.
fn slotted_module(component: &[u8]) -> Result<(Vec<RawSection>, usize)> {
    let sections = sections(component)?;
    let mut found = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let contents = &component[section.contents.clone()];
        if section.id == COMPONENT_CORE_MODULE_SECTION {
            let scan = scan_core(contents).with_context(|| {
                format!("reading the core module at offset {}", section.whole.start)
            })?;
            for _ in &scan.slots {
                found.push(i);
            }
        } else if find_all(contents, &SLOT_MAGIC).next().is_some() {
            bail!(
                "a plan descriptor sits in a nested component or other section (id {}); only \
                 top-level core modules are supported",
                section.id
            );
        }
    }
    match found.as_slice() {
        [] => bail!("no plan descriptor found: not a Straddle policy template"),
        [index] => Ok((sections, *index)),
        more => bail!(
            "{} plan descriptors found; expected exactly one",
            more.len()
        ),
    }
}

/// What [`embed_core`] and [`read_plan`] need to know about a core module.
#[derive(Default)]
struct CoreScan {
    imported_memories: usize,
    memories: Vec<wasmparser::MemoryType>,
    segments: Vec<Segment>,
    slots: Vec<Slot>,
}

struct Segment {
    /// Memory index (active segments only).
    memory: u32,
    /// `i32.const` offset of an active segment; `None` for passive segments
    /// and other offset expressions (e.g. `global.get` in PIC modules).
    offset: Option<u32>,
    /// The segment's bytes, as a range of the module.
    data: Range<usize>,
}

struct Slot {
    /// Offset of the descriptor's magic in the module.
    at: usize,
    /// Index into `CoreScan::segments`.
    segment: usize,
}

impl CoreScan {
    fn single_slot(&self) -> Result<&Slot> {
        match self.slots.as_slice() {
            [] => bail!("no plan descriptor found: not a Straddle policy template"),
            [slot] => Ok(slot),
            more => bail!(
                "{} plan descriptors found; expected exactly one",
                more.len()
            ),
        }
    }
}

fn scan_core(module: &[u8]) -> Result<CoreScan> {
    let mut scan = CoreScan::default();
    for payload in Parser::new(0).parse_all(module) {
        match payload? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let TypeRef::Memory(_) = import?.ty {
                        scan.imported_memories += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    scan.memories.push(memory?);
                }
            }
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data?;
                    let start = data.data.as_ptr().addr() - module.as_ptr().addr();
                    let (memory, offset) = match data.kind {
                        DataKind::Passive => (0, None),
                        DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => {
                            let mut ops = offset_expr.get_operators_reader();
                            let offset = match (ops.read()?, ops.read()?) {
                                (Operator::I32Const { value }, Operator::End) => Some(value as u32),
                                _ => None,
                            };
                            (memory_index, offset)
                        }
                    };
                    let segment = scan.segments.len();
                    for i in find_all(data.data, &SLOT_MAGIC) {
                        ensure!(
                            i + SLOT_LEN <= data.data.len(),
                            "the plan descriptor at offset {} is cut off by the end of its data \
                             segment",
                            start + i
                        );
                        scan.slots.push(Slot {
                            at: start + i,
                            segment,
                        });
                    }
                    scan.segments.push(Segment {
                        memory,
                        offset,
                        data: start..start + data.data.len(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(scan)
}

/// `(ptr, len)` of the descriptor whose magic starts at `at`.
fn slot_value(module: &[u8], at: usize) -> (u32, u32) {
    let word = |i: usize| {
        let b = &module[at + i..at + i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    (word(16), word(20))
}

fn embed_core(module: &[u8], plan: &[u8]) -> Result<Vec<u8>> {
    let scan = scan_core(module)?;
    let slot = scan.single_slot()?;
    let (ptr, len) = slot_value(module, slot.at);
    ensure!(
        ptr == 0 && len == 0,
        "the module already has an embedded plan ({len} bytes at {ptr:#x}); embed into the \
         template, not into a compiled policy"
    );
    let segment = &scan.segments[slot.segment];
    ensure!(
        segment.offset.is_some() && segment.memory == 0,
        "the plan descriptor is in a passive or relocatable (PIC) data segment"
    );
    ensure!(
        scan.imported_memories == 0,
        "the module imports its memory; the plan needs a memory the module defines"
    );
    let memory = match scan.memories.as_slice() {
        [memory] => *memory,
        [] => bail!("the module defines no memory"),
        more => bail!("the module defines {} memories; expected one", more.len()),
    };
    ensure!(!memory.memory64, "the module's memory is 64-bit");
    ensure!(!memory.shared, "the module's memory is shared");
    ensure!(
        memory.page_size_log2.is_none_or(|log2| log2 == 16),
        "the module's memory has a custom page size"
    );

    let plan_len = plan.len() as u64;
    let base = memory.initial * PAGE;
    let minimum = memory.initial + plan_len.div_ceil(PAGE);
    ensure!(
        minimum <= MAX_PAGES_32,
        "a {plan_len}-byte plan does not fit into 32-bit memory after {} pages",
        memory.initial
    );
    if let Some(maximum) = memory.maximum {
        ensure!(
            minimum <= maximum,
            "a {plan_len}-byte plan needs {minimum} pages of memory, above the module's maximum \
             of {maximum}"
        );
    }
    let (base, plan_len) = (base as u32, plan_len as u32); // both < 2^32, checked above

    let mut patched = module.to_vec();
    patched[slot.at + 16..slot.at + 20].copy_from_slice(&base.to_le_bytes());
    patched[slot.at + 20..slot.at + 24].copy_from_slice(&plan_len.to_le_bytes());

    let mut out = patched[..8].to_vec();
    for section in sections(&patched)? {
        let contents = &patched[section.contents.clone()];
        let reader = || BinaryReader::new(contents, section.contents.start);
        match section.id {
            MEMORY_SECTION => {
                let mut memories = MemorySection::new();
                for memory in MemorySectionReader::new(reader())? {
                    let mut ty = RoundtripReencoder.memory_type(memory?)?;
                    ty.minimum = minimum;
                    memories.memory(ty);
                }
                memories.append_to(&mut out);
            }
            DATA_COUNT_SECTION => {
                let count = reader().read_var_u32()?;
                DataCountSection { count: count + 1 }.append_to(&mut out);
            }
            DATA_SECTION => {
                let mut data = DataSection::new();
                RoundtripReencoder
                    .parse_data_section(&mut data, DataSectionReader::new(reader())?)?;
                data.active(0, &ConstExpr::i32_const(base as i32), plan.iter().copied());
                data.append_to(&mut out);
            }
            _ => out.extend_from_slice(&patched[section.whole.clone()]),
        }
    }
    Ok(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    let len = u32::try_from(len).context("section too large")?;
    wasm_encoder::Encode::encode(&len, out);
    Ok(())
}

/// Start offsets of every occurrence of `needle` in `haystack`.
fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, window)| *window == needle)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GUEST_CORE_MODULE, POLICY_TEMPLATE};
    use wasm_encoder::{EntityType, ImportSection, MemoryType, Module};

    fn plan(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn slot(ptr: u32, len: u32) -> Vec<u8> {
        let mut slot = SLOT_MAGIC.to_vec();
        slot.extend_from_slice(&ptr.to_le_bytes());
        slot.extend_from_slice(&len.to_le_bytes());
        slot
    }

    fn memory(minimum: u64) -> MemoryType {
        MemoryType {
            minimum,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        }
    }

    /// A minimal core module: one memory and the given active segments.
    fn module(memory_ty: MemoryType, segments: &[(u32, Vec<u8>)], data_count: bool) -> Vec<u8> {
        let mut module = Module::new();
        let mut memories = MemorySection::new();
        memories.memory(memory_ty);
        module.section(&memories);
        if data_count {
            module.section(&DataCountSection {
                count: segments.len() as u32,
            });
        }
        let mut data = DataSection::new();
        for (offset, bytes) in segments {
            data.active(
                0,
                &ConstExpr::i32_const(*offset as i32),
                bytes.iter().copied(),
            );
        }
        module.section(&data);
        module.finish()
    }

    fn memory_minimum(core: &[u8]) -> u64 {
        scan_core(core).unwrap().memories[0].initial
    }

    fn data_count(core: &[u8]) -> Option<u32> {
        Parser::new(0)
            .parse_all(core)
            .find_map(|p| match p.unwrap() {
                Payload::DataCountSection { count, .. } => Some(count),
                _ => None,
            })
    }

    /// The core module inside a component with a plan (or the module itself).
    fn core_of(module: &[u8]) -> Vec<u8> {
        if Parser::is_component(module) {
            let (sections, index) = slotted_module(module).unwrap();
            module[sections[index].contents.clone()].to_vec()
        } else {
            module.to_vec()
        }
    }

    #[test]
    fn template_has_one_descriptor_and_no_plan() {
        assert!(Parser::is_component(POLICY_TEMPLATE));
        let err = read_plan(POLICY_TEMPLATE).unwrap_err().to_string();
        assert!(err.contains("no embedded plan"), "{err}");
        assert!(read_plan(GUEST_CORE_MODULE).is_err());
    }

    #[test]
    fn embeds_into_the_template_and_reads_back() {
        for len in [1, 206, 65536, 70_000] {
            let plan = plan(len);
            let module = embed_plan(POLICY_TEMPLATE, &plan).unwrap();
            assert!(Parser::is_component(&module));
            assert_eq!(read_plan(&module).unwrap(), plan, "len {len}");

            let before = core_of(POLICY_TEMPLATE);
            let after = core_of(&module);
            let pages = (len as u64).div_ceil(PAGE);
            assert_eq!(memory_minimum(&after), memory_minimum(&before) + pages);
            assert_eq!(
                data_count(&after),
                data_count(&before).map(|count| count + 1)
            );
            // The descriptor points at the first page past the old minimum.
            let scan = scan_core(&after).unwrap();
            let (ptr, plan_len) = slot_value(&after, scan.single_slot().unwrap().at);
            assert_eq!(u64::from(ptr), memory_minimum(&before) * PAGE);
            assert_eq!(plan_len as usize, len);
        }
    }

    #[test]
    fn embeds_into_a_bare_core_module() {
        let plan = plan(1000);
        let module = embed_plan(GUEST_CORE_MODULE, &plan).unwrap();
        assert!(Parser::is_core_wasm(&module));
        assert_eq!(read_plan(&module).unwrap(), plan);
    }

    #[test]
    fn output_is_deterministic_and_only_touches_what_it_must() {
        let plan = plan(5000);
        let a = embed_plan(POLICY_TEMPLATE, &plan).unwrap();
        let b = embed_plan(POLICY_TEMPLATE, &plan).unwrap();
        assert_eq!(a, b);
        // Template + plan + a few bytes of headers.
        let growth = a.len() - POLICY_TEMPLATE.len();
        assert!(
            growth >= plan.len() && growth < plan.len() + 32,
            "grew {growth}"
        );
    }

    #[test]
    fn refuses_double_embedding() {
        let module = embed_plan(POLICY_TEMPLATE, b"first").unwrap();
        let err = embed_plan(&module, b"second").unwrap_err().to_string();
        assert!(err.contains("already has an embedded plan"), "{err}");
    }

    #[test]
    fn refuses_an_empty_plan_and_non_wasm() {
        let err = embed_plan(POLICY_TEMPLATE, b"").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = embed_plan(b"not wasm at all", b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a WebAssembly"), "{err}");
        assert!(read_plan(b"\0asm").is_err());
    }

    #[test]
    fn refuses_zero_or_two_descriptors() {
        let none = module(memory(1), &[(16, b"hello".to_vec())], false);
        let err = embed_plan(&none, b"x").unwrap_err().to_string();
        assert!(err.contains("no plan descriptor"), "{err}");

        let two = module(memory(1), &[(16, slot(0, 0)), (64, slot(0, 0))], false);
        let err = embed_plan(&two, b"x").unwrap_err().to_string();
        assert!(err.contains("2 plan descriptors"), "{err}");

        let mut twice = slot(0, 0);
        twice.extend(slot(0, 0));
        let two_in_one = module(memory(1), &[(16, twice)], false);
        assert!(embed_plan(&two_in_one, b"x").is_err());
    }

    #[test]
    fn small_hand_made_module_round_trips_with_data_count() {
        let core = module(memory(2), &[(16, slot(0, 0))], true);
        let plan = plan(100);
        let out = embed_plan(&core, &plan).unwrap();
        assert_eq!(read_plan(&out).unwrap(), plan);
        assert_eq!(memory_minimum(&out), 3);
        assert_eq!(data_count(&out), Some(2));
        let (ptr, len) = slot_value(&out, scan_core(&out).unwrap().slots[0].at);
        assert_eq!((ptr, len), (2 * 65536, 100));
    }

    #[test]
    fn refuses_memories_it_cannot_grow() {
        let shared = module(
            MemoryType {
                shared: true,
                maximum: Some(10),
                ..memory(1)
            },
            &[(16, slot(0, 0))],
            false,
        );
        let err = embed_plan(&shared, b"x").unwrap_err().to_string();
        assert!(err.contains("shared"), "{err}");

        let capped = module(
            MemoryType {
                maximum: Some(1),
                ..memory(1)
            },
            &[(16, slot(0, 0))],
            false,
        );
        let err = embed_plan(&capped, b"x").unwrap_err().to_string();
        assert!(err.contains("maximum"), "{err}");

        let mut imported = Module::new();
        let mut imports = ImportSection::new();
        imports.import("env", "memory", EntityType::Memory(memory(1)));
        imported.section(&imports);
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(16), slot(0, 0));
        imported.section(&data);
        let err = embed_plan(&imported.finish(), b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("imports its memory"), "{err}");
    }

    #[test]
    fn refuses_a_descriptor_in_a_passive_segment() {
        let mut m = Module::new();
        let mut memories = MemorySection::new();
        memories.memory(memory(1));
        m.section(&memories);
        m.section(&DataCountSection { count: 1 });
        let mut data = DataSection::new();
        data.passive(slot(0, 0));
        m.section(&data);
        let err = embed_plan(&m.finish(), b"x").unwrap_err().to_string();
        assert!(err.contains("passive"), "{err}");
    }

    #[test]
    fn read_plan_rejects_a_descriptor_pointing_nowhere() {
        let core = module(memory(2), &[(16, slot(4 * 65536, 10))], false);
        let err = read_plan(&core).unwrap_err().to_string();
        assert!(err.contains("no data segment holds"), "{err}");
    }
}
